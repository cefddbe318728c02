"""boards/zcu102/backend.py: the board backend's own code on a pynq.Device stand-in served by the RTL.

The stand-in (boards/zcu102/standin.py) answers ``pynq.MMIO`` and ``pynq.allocate`` with the
Verilator model of ``axi_top`` (demo preset; built once, cached under build/rtl/, shared with the
rtl backend's tests). A small random integer ViT exported for the demo preset runs through
``Runtime(artifact, backend="board")`` (the ``vitforge.backends`` entry point) and through the rtl
backend's driver: logits equal to the golden model's, cycles and per-layer cycles equal to the rtl
backend's. One stand-in (one Verilator model instance) serves every test of this module: the rtl
backend's driver runs on its ``RtlDevice`` directly (buffers at address 0, as ``Runtime(..., "rtl")``
puts them), the board backend through PYNQ (buffers from ``allocate``, above 1 MiB).
"""

from __future__ import annotations

import pytest
import torch

from vitforge.boards.zcu102 import backend, design
from vitforge.hw import axi
from vitforge.hw.config import get_preset
from vitforge.sw import random_model
from vitforge.sw.runtime import (
    AcceleratorBackend,
    AcceleratorTimeout,
    ArtifactProgram,
    Runtime,
    backend_names,
    run_images,
)
from vitforge.sw.vit import ViTConfig

pytest.importorskip("pynq", reason="the board extra (pip install 'vitforge[board]') is not installed")
standin = pytest.importorskip("vitforge.boards.zcu102.standin")

DEMO = get_preset("demo")
#: 16x16 images in 4x4 patches: 16 patches + class token; the demo preset's D and heads; a selector.
MODEL = ViTConfig(image_size=16, patch_size=4, in_chans=1, num_classes=4, embed_dim=64, depth=2, num_heads=4,
                  mlp_ratio=2.0, selector_blocks=(1,), keep_rates=(0.5,))
SEED = 11
IMAGES = 2


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return random_model.random_artifact(SEED, MODEL, tmp_path_factory.mktemp("board") / "artifact", "demo")


@pytest.fixture(scope="module")
def dev():
    device = standin.make_standin(DEMO)
    yield device
    device.close()


def _images(n: int) -> torch.Tensor:
    return torch.stack([random_model.random_image(SEED + i, MODEL) for i in range(n)])


def _board(artifact, dev, **options) -> Runtime:
    return Runtime(artifact, "board", device=dev, reg_base=dev.reg_base, **options)


def test_board_is_an_entry_point_backend(artifact):
    assert "board" in backend_names()
    with pytest.raises(TypeError, match=r"backend 'golden' takes no options \(bitfile\)"):
        Runtime(artifact, "golden", bitfile="x.bit")


@pytest.mark.rtl
def test_board_backend_on_the_rtl_equals_golden_and_rtl(artifact, dev):
    images, labels = _images(IMAGES), torch.arange(IMAGES)
    board = _board(artifact, dev)
    # The rtl backend: the same driver straight on the RtlDevice (what Runtime(artifact, "rtl") builds).
    rtl = AcceleratorBackend(dev.rtl, DEMO, ArtifactProgram.load(artifact, board.manifest), "rtl")
    want = [rtl.infer(board.input_codes(img)) for img in images]
    board.close()
    board = _board(artifact, dev)  # the board driver sets its buffer addresses up again
    with board:
        assert isinstance(board.backend.device, backend.PynqDevice)
        res = run_images(board, images, labels)
        assert res["backend"] == "board" and res["exact"] == IMAGES, res["mismatches"]
        for img, ref in zip(images, want, strict=True):
            got = board.infer(img)
            assert torch.equal(got.logits, ref.logits)
            assert got.cycles == ref.cycles > 0 and got.layer_cycles == ref.layer_cycles
            assert got.tokens == ref.tokens
        # The driver reached the gateware only through pynq.MMIO and the flushed DMA buffer.
        assert dev.accesses > 0
        assert board.backend.device.base >= standin.FIRST_BUFFER


@pytest.mark.rtl
def test_unflushed_writes_do_not_reach_the_rtl(artifact, dev):
    with _board(artifact, dev) as board:
        pdev = board.backend.device
        addr = pdev.base
        pdev.buffer[0:4] = [1, 2, 3, 4]  # a CPU write still in the cache
        assert dev.rtl.read_mem(addr, 4) != bytes([1, 2, 3, 4])
        pdev.buffer[0:4].flush()
        assert dev.rtl.read_mem(addr, 4) == bytes([1, 2, 3, 4])
        dev.rtl.write_mem(addr, bytes([9, 9, 9, 9]))  # the accelerator writes
        assert pdev.buffer[0:4].tobytes() == bytes([1, 2, 3, 4])
        assert pdev.read_mem(addr, 4) == bytes([9, 9, 9, 9])  # read_mem invalidates first


@pytest.mark.rtl
def test_polling_stops_at_the_cycle_budget(artifact, dev):
    with _board(artifact, dev, budget=20_000) as board:
        with pytest.raises(AcceleratorTimeout, match="did not finish within 20000 cycles; it is at instruction"):
            board.infer(_images(1)[0])
        dev.rtl.wait_irq(100 * board.backend.budget)  # let the run finish: the device is shared


def test_make_backend_needs_the_bitstream(artifact, tmp_path, monkeypatch):
    monkeypatch.delenv(backend.BITFILE_ENV, raising=False)
    with pytest.raises(ValueError, match=f"needs the bitstream: pass bitfile=... or set {backend.BITFILE_ENV}"):
        Runtime(artifact, "board")
    bit = tmp_path / "x.bit"
    bit.write_bytes(b"\0")
    with pytest.raises(FileNotFoundError, match=r"x\.hwh must both exist"):
        Runtime(artifact, "board", bitfile=bit)


def test_register_window_comes_from_the_overlay():
    window = design.address_map(DEMO)
    ip = {design.ACCEL_CELL: {"phys_addr": window.reg_base, "addr_range": window.reg_range}}
    assert backend.register_window(ip) == (window.reg_base, window.reg_range)
    with pytest.raises(KeyError, match="no IP 'accel'"):
        backend.register_window({"other": {}})


def test_register_window_must_cover_the_profile():
    with pytest.raises(ValueError, match="does not reach the profile's end"):
        backend.PynqDevice(DEMO, reg_base=0, reg_range=axi.PROFILE_BASE, mem_bytes=DEMO.axi_align)
