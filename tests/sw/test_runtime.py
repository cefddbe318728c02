"""sw/runtime.py: the golden and rtl backends behind one API, the driver's checks and timeouts.

The rtl tests build ``AxiTop(demo)`` with Verilator once (about two minutes; cached under
build/rtl/) and run a small random integer ViT (17 tokens, D=64, a selector before block 1)
exported as an artifact for the demo preset.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from vitforge.cli import main
from vitforge.hw import axi
from vitforge.hw.config import get_preset
from vitforge.hw.cycles import CycleModel
from vitforge.hw.isa import Op
from vitforge.sw import random_model
from vitforge.sw.golden import GoldenModel
from vitforge.sw.runtime import (
    AcceleratorBackend,
    AcceleratorError,
    AcceleratorTimeout,
    ArtifactProgram,
    Runtime,
    run_images,
)
from vitforge.sw.vit import ViTConfig

DEMO = get_preset("demo")
#: 16x16 images in 4x4 patches: 16 patches + class token; the demo preset's D and heads.
MODEL = ViTConfig(image_size=16, patch_size=4, in_chans=1, num_classes=4, embed_dim=64, depth=2, num_heads=4,
                  mlp_ratio=2.0, selector_blocks=(1,), keep_rates=(0.5,))
SEED = 7


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return random_model.random_artifact(SEED, MODEL, tmp_path_factory.mktemp("rt") / "artifact", "demo")


def _images(n: int) -> torch.Tensor:
    return torch.stack([random_model.random_image(SEED + i, MODEL) for i in range(n)])


def test_golden_backend_is_the_golden_model(artifact):
    rt = Runtime(artifact, "golden")
    for img in _images(2):
        got = rt.infer(img)
        logits, _, tokens = GoldenModel(rt.model).run(img)
        assert torch.equal(got.logits, logits) and got.tokens == tokens[-1] and got.cycles is None


def test_parallel_jobs_give_the_same_figures(artifact):
    rt = Runtime(artifact, "golden")
    images, labels = _images(4), torch.tensor([0, 1, 2, 3])
    one, two = run_images(rt, images, labels), run_images(rt, images, labels, jobs=2)
    assert one["exact"] == two["exact"] == 4 and one["top1"] == two["top1"] and two["jobs"] == 2
    with pytest.raises(ValueError, match="jobs must be at least 1, not 0"):
        run_images(rt, images, labels, jobs=0)


def test_unknown_backend_is_refused(artifact):
    with pytest.raises(ValueError, match="unknown backend 'fpga'; valid: golden, rtl"):
        Runtime(artifact, "fpga")


class FakeDevice:
    """Registers only: enough for the driver's identity checks."""

    def __init__(self, regs: dict[int, int]):
        self.config, self.regs, self.mem = DEMO, regs, {}

    def read_reg(self, addr):
        return self.regs.get(int(addr), 0)

    def write_reg(self, addr, value):
        self.regs[int(addr)] = value

    def write_mem(self, addr, data):
        self.mem[addr] = data

    def close(self):
        pass


def test_driver_refuses_hardware_built_for_another_config(artifact):
    rt = Runtime(artifact, "golden")
    prog = ArtifactProgram.load(artifact, rt.manifest)
    other = axi.config_id(DEMO) ^ 1
    with pytest.raises(AcceleratorError, match=f"built for config {other:#010x}; the artifact's is"):
        AcceleratorBackend(FakeDevice({axi.Reg.ID: axi.MAGIC, axi.Reg.CONFIG: other}), DEMO, prog, "fake")
    with pytest.raises(AcceleratorError, match="ID register reads 0x00000000"):
        AcceleratorBackend(FakeDevice({}), DEMO, prog, "fake")


def test_driver_refuses_hardware_without_the_fused_gelu(artifact):
    """An artifact compiled for a fuse_gelu build (its GEMMs carry the gelu flag) must not run on
    hardware built without it, nor the other way round: the field is in the config fingerprint."""
    rt = Runtime(artifact, "golden")
    prog = ArtifactProgram.load(artifact, rt.manifest)
    fused = dataclasses.replace(DEMO, fuse_gelu=True)
    assert axi.config_id(fused) != axi.config_id(DEMO)
    for built, compiled in ((DEMO, fused), (fused, DEMO)):
        device = FakeDevice({axi.Reg.ID: axi.MAGIC, axi.Reg.CONFIG: axi.config_id(built)})
        with pytest.raises(AcceleratorError, match=f"built for config {axi.config_id(built):#010x}"):
            AcceleratorBackend(device, compiled, prog, "fake")


@pytest.mark.rtl
def test_rtl_logits_equal_golden(artifact):
    rt = Runtime(artifact, "rtl")
    try:
        images = _images(3)
        res = run_images(rt, images, torch.tensor([0, 1, 2]))
        assert res["exact"] == 3, res["mismatches"]
        got = rt.infer(images[0])
        prog = rt.backend.prog.program
        assert list(got.layer_cycles) == prog.layer_names() == ["embed", "blocks.0", "selectors.1", "blocks.1",
                                                                "head"]
        assert sum(got.layer_cycles.values()) == got.cycles > 0
        _, _, tokens = rt.golden.run(images[0])
        assert got.tokens == tokens[-1] < MODEL.num_tokens
        assert res["per_layer_cycles"].keys() == got.layer_cycles.keys()
        # The latency model (AXI port) against the RTL's per-layer profile: within 5% on every layer.
        model = CycleModel(DEMO, "axi").program_cycles(prog, [tokens[1]])
        for name, cycles in got.layer_cycles.items():
            assert abs(model["per_layer"][name] - cycles) <= 0.05 * cycles, (name, model["per_layer"][name], cycles)
    finally:
        rt.close()


@pytest.mark.rtl
def test_rtl_timeout_names_the_layer(artifact):
    # A budget of the embed layer's modeled cycles: the program fetch comes first, so the run is still
    # in the embed layer when the budget runs out.
    prog = ArtifactProgram.load(artifact, Runtime(artifact, "golden").manifest).program
    budget = CycleModel(DEMO, "axi").program_cycles(prog, [MODEL.num_tokens])["per_layer"]["embed"]
    with Runtime(artifact, "rtl", budget=budget) as rt, pytest.raises(
            AcceleratorTimeout, match=rf"within {budget} cycles; it is at instruction \d+ \(\w+\) of layer 'embed'"):
        rt.infer(_images(1)[0])


@pytest.mark.rtl
def test_rtl_starved_stream_hangs_and_is_caught(artifact):
    """A mis-programmed run (the input stream is shorter than the program's LOADs) never finishes the
    last LOAD: the controller stops where it waits for it (the LOAD itself if it blocks; for a
    LOAD nowait, the first SYNC that waits for every LOAD, or END); the driver times out and
    names that instruction and its layer."""
    with Runtime(artifact, "rtl", budget=400_000) as rt:
        be = rt.backend
        be.device.write_reg(axi.Reg.IN_BEATS, be.in_beats - 3)
        prog = be.prog.program
        last_load = max(k for k, ins in enumerate(prog.instrs) if ins.op == Op.LOAD)
        stuck = last_load if not prog.instrs[last_load].nowait else next(
            k for k in range(last_load + 1, len(prog.instrs))
            if prog.instrs[k].op == Op.END or (prog.instrs[k].op == Op.SYNC and prog.instrs[k].pending == 0))
        with pytest.raises(AcceleratorTimeout, match=f"instruction {stuck} \\({prog.instrs[stuck].op.name}\\) of "
                                                     f"layer '{prog.layers[stuck]}'"):
            rt.infer(_images(1)[0])


@pytest.mark.rtl
def test_cli_run_rtl_json(artifact, capsys, tmp_path):
    data = tmp_path / "tiny.npz"
    np.savez(data, x=_images(20).numpy(), y=np.arange(20) % MODEL.num_classes)
    assert main(["run", "--artifact", str(artifact), "--backend", "rtl", "--images", "1", "--json",
                 "--data", f"npz:{data}"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"images", "exact", "top1", "cycles_per_image", "per_layer_cycles"} <= set(out)
    assert out["images"] == 1 and out["exact"] == 1 and out["cycles_per_image"] > 0


@pytest.mark.rtl
@pytest.mark.slow  # the zcu102 top's Verilator build takes tens of minutes: VITFORGE_DEEP=1
def test_zcu102_smoke_logits_equal_golden():
    """A random ViT that fits zcu102 (sw/benchmark.py's smoke model) on the zcu102 RTL: 2 images."""
    from vitforge.sw.benchmark import bench

    res = bench("zcu102", None, 2, dense=False)
    assert res["pruned"]["images"] == 2 and res["pruned"]["exact"] == 2, res
    for name, layer in res["pruned"]["per_layer"].items():
        assert abs(layer["model_error_pct"]) <= 5.0, (name, layer)


@pytest.mark.rtl
@pytest.mark.slow  # the zcu102 top's Verilator build takes tens of minutes: VITFORGE_DEEP=1
def test_zcu102_deit_tiny_blocks_bit_exact_and_cycle_exact():
    """Two DeiT-T-shaped blocks (197 tokens, D = 192, 3 heads, a selector before the second) on the
    zcu102 RTL: the logits are the golden model's, and every layer's cycles the latency model's."""
    from vitforge.sw.benchmark import bench

    res = bench("zcu102", None, 1, dense=False, zcu102_model="deit-tiny")
    pruned = res["pruned"]
    assert pruned["images"] == 1 and pruned["exact"] == 1, res
    assert set(pruned["per_layer"]) == {"embed", "blocks.0", "selectors.1", "blocks.1", "head"}, res
    for name, layer in pruned["per_layer"].items():
        assert layer["cycles"] == layer["model_cycles"], (name, layer)


def test_model_builds_keep_tool_output_off_stdout(capfd):
    """`vitforge run --json` prints JSON on stdout: pyverilator's Verilator and make calls must not."""
    import pyverilator.pyverilator as pv

    from vitforge.sim import rtl

    rtl._patch_version()
    assert pv.call_process is rtl._quiet_call
    rtl._quiet_call(["echo", "verilator report"])
    assert capfd.readouterr().out == ""
    with pytest.raises(RuntimeError, match=r"failed:\n.*No such file"):
        rtl._quiet_call(["ls", "/nonexistent-vitforge"])
