"""A ``pynq.Device`` stand-in served by simulated gateware (Glasgow's way of testing a driver).

:func:`make_standin` returns a ``pynq.Device`` whose register reads and writes go to the
Verilator model of ``axi_top`` (:class:`vitforge.sim.rtl.RtlDevice`) and whose
``pynq.allocate`` buffers live in that model's emulated DDR, so that the board backend's own
code (:class:`~.backend.PynqDevice`: ``pynq.MMIO``, ``pynq.allocate``, ``flush`` /
``invalidate``, polling) runs unchanged against the RTL:

* ``capabilities = {"REGISTER_RW": True}``: ``pynq.MMIO(base, n, device=d)`` calls
  ``read_registers`` / ``write_registers`` with physical addresses in the register window;
* ``allocate`` returns a ``pynq.buffer.PynqBuffer`` (subclass) over host memory with ``device_address`` in
  the DDR; like the board's caches, the RTL sees host writes only after ``flush`` and the host
  sees the RTL's writes only after ``invalidate``;
* time: the gateware runs while the host is away, modeled as ``cycles_per_access`` clock cycles
  (or until the interrupt) before every register access.

PYNQ is optional (``vitforge[board]``); :func:`make_standin` imports it.
"""

from __future__ import annotations

import ctypes

import numpy as np

from vitforge.hw.config import HwConfig
from vitforge.hw.timing import DEFAULT_READ_LATENCY
from vitforge.sim.rtl import DDR_BYTES, RtlDevice

from . import design
from .backend import import_pynq

#: Cycles the gateware runs before each register access (the host's time away).
CYCLES_PER_ACCESS = 4096
#: DDR address of the first allocation (below it: nothing, so a zero address is never valid).
FIRST_BUFFER = 1 << 20
#: Bytes per register.
REG_BYTES = 4


def make_standin(cfg: HwConfig, *, reg_base: int | None = None, ddr_bytes: int = DDR_BYTES,
                 read_latency: int = DEFAULT_READ_LATENCY, cycles_per_access: int = CYCLES_PER_ACCESS):
    """A ``pynq.Device`` over ``RtlDevice(cfg)`` (see the module docstring).

    Args:
        cfg: the hardware config (the Verilator model is built for it on first use).
        reg_base: physical address of the register window (default: the block design's, :func:`~.design.address_map`).
        ddr_bytes, read_latency: the emulated DDR's size and read latency (as the rtl backend's).
        cycles_per_access: gateware cycles before each register access.

    Returns:
        the device; ``device.rtl`` is the :class:`~vitforge.sim.rtl.RtlDevice`, ``device.reg_base`` and
        ``device.reg_range`` the window.
    """
    pynq = import_pynq()
    from pynq.buffer import PynqBuffer

    if cycles_per_access < 1:
        raise ValueError(f"cycles_per_access must be at least 1, not {cycles_per_access}")
    amap = design.address_map(cfg)

    class StandinBuffer(PynqBuffer):
        """``PynqBuffer`` under numpy 2: PYNQ 4.0.0 (which pins numpy < 2) assigns ``self.device``,
        a read-only ``ndarray`` attribute since numpy 2.0; this plain class attribute shadows it."""

        device = None

    class RtlPynqDevice(pynq.Device):
        """PYNQ's view of the simulated board."""

        def __init__(self) -> None:
            super().__init__("vitforge-rtl-standin")
            self.capabilities = {"REGISTER_RW": True}
            self.rtl = RtlDevice(cfg, ddr_bytes=ddr_bytes, read_latency=read_latency)
            self.reg_base = amap.reg_base if reg_base is None else reg_base
            self.reg_range = amap.reg_range
            self._next = FIRST_BUFFER
            self.accesses = 0

        def _reg(self, address: int, length: int) -> int:
            off = address - self.reg_base
            if length != REG_BYTES or off < 0 or off + length > self.reg_range or off % REG_BYTES:
                raise ValueError(f"register access of {length} bytes at {address:#x} is outside the window "
                                 f"[{self.reg_base:#x}, {self.reg_base + self.reg_range:#x}) or not a 32-bit word")
            self.rtl.wait_irq(cycles_per_access)
            self.accesses += 1
            return off

        def read_registers(self, address: int, length: int) -> bytes:
            return self.rtl.read_reg(self._reg(address, length)).to_bytes(REG_BYTES, "little")

        def write_registers(self, address: int, data: bytes) -> None:
            self.rtl.write_reg(self._reg(address, len(data)), int.from_bytes(data, "little"))

        def allocate(self, shape, dtype, **kwargs):
            nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
            addr = self._next
            if addr + nbytes > ddr_bytes:
                raise MemoryError(f"{nbytes} bytes do not fit the emulated DDR's {ddr_bytes} bytes at {addr:#x}")
            align = self.rtl.config.axi_align
            self._next = -(-(addr + nbytes) // align) * align
            host = np.zeros(nbytes, dtype=np.uint8)
            buf = StandinBuffer(shape, dtype, buffer=host, device=self, device_address=addr, bo=addr, coherent=False)
            buf.host_memory = host  # keeps the backing memory alive as long as the buffer
            return buf

        def flush(self, bo: int, offset: int, vaddr: int, nbytes: int) -> None:
            self.rtl.write_mem(bo + offset, ctypes.string_at(vaddr, nbytes))

        def invalidate(self, bo: int, offset: int, vaddr: int, nbytes: int) -> None:
            ctypes.memmove(vaddr, self.rtl.read_mem(bo + offset, nbytes), nbytes)

        def close(self) -> None:
            self.rtl.close()

    return RtlPynqDevice()


__all__ = ["CYCLES_PER_ACCESS", "make_standin"]
