"""The runtime's ``board`` backend: :class:`~vitforge.sw.runtime.AcceleratorBackend` over a PYNQ device.

On a ZCU102 running PYNQ, :func:`make_backend` loads the bitstream (``pynq.Overlay``; the ``.hwh``
must lie beside the ``.bit``, as ``vitforge board build`` writes them), finds the accelerator's
register window in the overlay's ``ip_dict`` (cell :data:`~.design.ACCEL_CELL`) and wraps it in
a :class:`PynqDevice`:

* registers: ``pynq.MMIO`` on the window;
* memory: one ``pynq.allocate`` buffer (physically contiguous, 4 KiB aligned) that holds the
  program, the input stream and the output buffer at the addresses the driver lays out; every
  write is flushed from the CPU's cache (``flush``) before the accelerator reads it, every read
  invalidated (``invalidate``) after the accelerator wrote it;
* completion: polling ``STATUS.done`` with the cycle budget counted by the hardware itself
  (``TOTAL_CYCLES``), and a stall guard for a clock that stopped.

The same class runs, unchanged, on a ``pynq.Device`` stand-in whose registers and memory are
the Verilator model of ``axi_top`` (:mod:`vitforge.boards.zcu102.standin`).

``Runtime(artifact, backend="board", bitfile=...)`` and ``vitforge run --backend board`` reach
:func:`make_backend` through the ``vitforge.backends`` entry point (pyproject.toml). The bitstream
is the ``bitfile`` option or the ``VITFORGE_BITFILE`` environment variable.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import numpy as np

from vitforge.hw import axi
from vitforge.hw import compiler as hwp
from vitforge.hw.config import HwConfig
from vitforge.hw.isa import TOKENS
from vitforge.sw.runtime import AcceleratorBackend, ArtifactProgram

from . import design

#: Environment variable naming the bitstream when the ``bitfile`` option is not given.
BITFILE_ENV = "VITFORGE_BITFILE"
#: Seconds without any change of ``STATUS`` and ``TOTAL_CYCLES`` after which a poll gives up.
STALL_S = 1.0


def import_pynq():
    """``pynq``, imported with its own deprecation warnings silenced (pynqutils imports pkg_resources).

    Raises ``ModuleNotFoundError`` naming the ``board`` extra if PYNQ is not installed.
    """
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            import pynq
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError("the board backend needs PYNQ: pip install 'vitforge[board]' (on the board, "
                                  "PYNQ's image has it)") from err
    return pynq


def buffer_bytes(cfg: HwConfig, program: ArtifactProgram) -> int:
    """An upper bound on the memory the driver lays out for ``program``: program image, output
    buffer for the most tokens and input stream, each rounded up to ``cfg.axi_align``."""
    p = program.program
    prog = len(axi.program_image(cfg, program.words))
    rows = cfg.max_tokens if p.output_rows == TOKENS else p.output_rows
    out = axi.output_bytes(cfg, rows * cfg.row_words(p.output_cols))
    stream = len(axi.stream_image(cfg, p, {hwp.INPUT_BLOB: [0] * (p.input_shape[0] *
                                                                  cfg.row_words(p.input_shape[1]))}))
    return sum(-(-n // cfg.axi_align) * cfg.axi_align for n in (prog, out, stream))


class PynqDevice:
    """The accelerator on a PYNQ device: a :class:`vitforge.sw.runtime.Device`.

    Args:
        config: the hardware config the bitstream was built from.
        reg_base: physical address of the register window.
        reg_range: its size in bytes (registers and profile).
        mem_bytes: size of the DMA buffer to allocate.
        device: the ``pynq.Device`` (default: PYNQ's active device, the board).
        stall_s: a poll gives up after this many seconds without progress.

    Attributes:
        base: physical address of the DMA buffer (4 KiB aligned): the driver's ``base``.
    """

    def __init__(self, config: HwConfig, *, reg_base: int, reg_range: int, mem_bytes: int, device=None,
                 stall_s: float = STALL_S) -> None:
        if mem_bytes <= 0:
            raise ValueError(f"mem_bytes must be positive, not {mem_bytes}")
        if reg_range < design.profile_end(config):
            raise ValueError(f"the register window of {reg_range:#x} bytes does not reach the profile's end "
                             f"({design.profile_end(config):#x})")
        pynq = import_pynq()
        self.config = config
        self.stall_s = stall_s
        self.mmio = pynq.MMIO(reg_base, reg_range, device=device)
        self.buffer = pynq.allocate(shape=(mem_bytes,), dtype=np.uint8, target=device)
        self.base = int(self.buffer.device_address)
        if self.base % config.axi_align:
            raise RuntimeError(f"pynq.allocate gave a buffer at {self.base:#x}, not {config.axi_align}-byte aligned")

    def write_reg(self, addr: int, value: int) -> None:
        self.mmio.write(int(addr), int(value) & 0xFFFFFFFF)

    def read_reg(self, addr: int) -> int:
        return int(self.mmio.read(int(addr)))

    def _view(self, addr: int, n: int):
        off = addr - self.base
        if off < 0 or off + n > self.buffer.nbytes:
            raise ValueError(f"{n} bytes at {addr:#x} are outside the DMA buffer "
                             f"[{self.base:#x}, {self.base + self.buffer.nbytes:#x})")
        return self.buffer[off:off + n]

    def write_mem(self, addr: int, data: bytes) -> None:
        """Copy ``data`` into the buffer at physical ``addr`` and flush it to memory."""
        view = self._view(addr, len(data))
        view[:] = np.frombuffer(data, dtype=np.uint8)
        view.flush()

    def read_mem(self, addr: int, n: int) -> bytes:
        """Invalidate the cached copy of ``n`` bytes at ``addr``, then read them."""
        view = self._view(addr, n)
        view.invalidate()
        return view.tobytes()

    def wait_irq(self, max_cycles: int) -> int:
        """Poll ``STATUS`` until ``done``, or the hardware's ``TOTAL_CYCLES`` reaches ``max_cycles``, or
        neither ``STATUS`` nor ``TOTAL_CYCLES`` changed for :attr:`stall_s` seconds; returns ``TOTAL_CYCLES``."""
        last, since = None, time.monotonic()
        while True:
            status = self.read_reg(axi.Reg.STATUS)
            cycles = self.read_reg(axi.Reg.TOTAL_CYCLES)
            if status & axi.Status.DONE or cycles >= max_cycles:
                return cycles
            if (status, cycles) != last:
                last, since = (status, cycles), time.monotonic()
            elif time.monotonic() - since > self.stall_s:
                return cycles

    def close(self) -> None:
        self.buffer.freebuffer()


def register_window(ip_dict: dict) -> tuple[int, int]:
    """``(phys_addr, addr_range)`` of the accelerator in an overlay's ``ip_dict``."""
    entry = ip_dict.get(design.ACCEL_CELL)
    if entry is None:
        raise KeyError(f"the overlay has no IP {design.ACCEL_CELL!r} (it has: {', '.join(sorted(ip_dict))}); "
                       "was it built by `vitforge board build`?")
    return int(entry["phys_addr"]), int(entry["addr_range"])


def make_backend(*, artifact_root: Path, manifest: dict, hw: HwConfig, program: ArtifactProgram,
                 budget: int | None = None, bitfile: str | Path | None = None, device=None,
                 reg_base: int | None = None, reg_range: int | None = None) -> AcceleratorBackend:
    """The ``board`` backend for an artifact (the ``vitforge.backends`` entry point).

    Args:
        artifact_root, manifest, hw, program: the artifact, as :class:`~vitforge.sw.runtime.Runtime` loaded it.
        budget: cycles per image before a timeout (default: the driver's).
        bitfile: the ``.bit`` to load with ``pynq.Overlay`` (default ``$VITFORGE_BITFILE``); its ``.hwh``
            must lie beside it. Not loaded when ``reg_base`` is given.
        device: the ``pynq.Device`` (default: the board).
        reg_base, reg_range: the register window, for a bitstream that is already loaded (or a stand-in);
            default: read from the overlay (``reg_range`` defaults to the block design's window).
    """
    if reg_base is None:
        bit = bitfile or os.environ.get(BITFILE_ENV)
        if not bit:
            raise ValueError(f"the board backend needs the bitstream: pass bitfile=... or set {BITFILE_ENV}")
        bit = Path(bit)
        if not bit.is_file() or not bit.with_suffix(".hwh").is_file():
            raise FileNotFoundError(f"{bit} and {bit.with_suffix('.hwh')} must both exist "
                                    "(`vitforge board build` writes them side by side)")
        overlay = import_pynq().Overlay(str(bit), device=device)
        reg_base, reg_range = register_window(overlay.ip_dict)
    if reg_range is None:
        reg_range = design.address_map(hw).reg_range
    dev = PynqDevice(hw, reg_base=reg_base, reg_range=reg_range, mem_bytes=buffer_bytes(hw, program), device=device)
    return AcceleratorBackend(dev, hw, program, "board", budget, base=dev.base)


__all__ = ["BITFILE_ENV", "PynqDevice", "buffer_bytes", "import_pynq", "make_backend", "register_window"]
