# amaranth: UnusedElaboratable=no
# (refused configs never reach elaboration; Amaranth would warn about them at exit)
"""Two int8 products per multiplication (``HwConfig.dsp_packing``, AMD WP486): the split, proved.

* The arithmetic of :func:`vitforge.hw.gemm.packed_pair`, over all 2**24 int8 triples
  ``(a_hi, a_lo, b)`` with numpy (the RTL's bit operations, written out).
* The RTL of :func:`~vitforge.hw.gemm.packed_pair` in the Amaranth simulator: every ``(a_lo, b)``
  for corner ``a_hi`` values and every ``(a_hi, b)`` for corner ``a_lo`` values.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from amaranth.hdl import Cat, Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from vitforge.hw.config import BASE
from vitforge.hw.gemm import PACK_SHIFT, GemmEngine, packed_pair
from vitforge.hw.synth import split_modules
from vitforge.hw.verilog import generate
from vitforge.quant.fixed import INT8

INT8_VALUES = np.arange(INT8.qmin, INT8.qmax + 1, dtype=np.int64)
#: Operand values where the sign borrow and the field edges change.
CORNERS = (-128, -127, -64, -1, 0, 1, 2, 127)
#: Signed width of a DSP48E2 multiplier's A input (27 x 18).
DSP_A_BITS = 27
#: Bits that hold one product in the test's output port (|a*b| <= 2**14).
FIELD = 16


def split(a_hi: np.ndarray, a_lo: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The packed product's two fields as the RTL reads them: ``(hi, lo)``, int64 like the inputs."""
    packed = (a_hi << PACK_SHIFT) + a_lo
    p = packed * b
    field = (1 << PACK_SHIFT) - 1
    sign = 1 << (PACK_SHIFT - 1)
    lo = ((p & field) ^ sign) - sign  # P[:PACK_SHIFT] read as signed
    hi = (p >> PACK_SHIFT) + ((p >> (PACK_SHIFT - 1)) & 1)  # P[PACK_SHIFT:] plus the low field's sign bit
    return hi, lo


def test_split_is_exact_for_every_int8_triple():
    a_hi, a_lo = (g.ravel() for g in np.meshgrid(INT8_VALUES, INT8_VALUES, indexing="ij"))
    packed = (a_hi << PACK_SHIFT) + a_lo
    assert packed.min() >= -(1 << (DSP_A_BITS - 1)) and packed.max() < 1 << (DSP_A_BITS - 1)
    for b in INT8_VALUES:  # 256 x 65,536 triples
        hi, lo = split(a_hi, a_lo, b)
        np.testing.assert_array_equal(lo, a_lo * b, err_msg=f"low product, b={b}")
        np.testing.assert_array_equal(hi, a_hi * b, err_msg=f"high product, b={b}")


def test_split_without_the_correction_is_wrong():
    """The sign borrow is real: without adding the low field's sign bit, the high product is off by one."""
    a_hi, a_lo, b = np.int64(3), np.int64(-1), np.int64(5)
    p = ((a_hi << PACK_SHIFT) + a_lo) * b
    assert p >> PACK_SHIFT == a_hi * b - 1
    assert split(a_hi, a_lo, b) == (a_hi * b, a_lo * b)


class _Pair(wiring.Component):
    """:func:`packed_pair` against all 256 values of ``b`` at once (one output pair per value)."""

    def __init__(self):
        n = len(INT8_VALUES)
        # all products in one wide port (hi of every b, then lo of every b, FIELD bits each): one read a step
        super().__init__({"a_hi": In(signed(8)), "a_lo": In(signed(8)), "products": Out(2 * n * FIELD)})

    def elaborate(self, platform):
        m = Module()
        bs = [Signal(signed(8), init=int(v), name=f"b{v + 128}") for v in INT8_VALUES]
        hi, lo = packed_pair(m, self.a_hi, self.a_lo, bs, name="t")
        values = [v if c is None else v + c for v, c in hi + lo]
        m.d.comb += self.products.eq(Cat(*(v.as_unsigned()[:FIELD] for v in values)))
        return m


def _fields(value: int, n: int) -> list[int]:
    """``n`` signed FIELD-bit fields of ``value``, lowest first."""
    mask, sign = (1 << FIELD) - 1, 1 << (FIELD - 1)
    return [(((value >> (FIELD * i)) & mask) ^ sign) - sign for i in range(n)]


def test_packed_pair_rtl_matches_products():
    dut = _Pair()
    pairs = [(int(h), c) for c in CORNERS for h in INT8_VALUES] + [(c, int(lo)) for c in CORNERS for lo in INT8_VALUES]
    expect = {int(a): (a * INT8_VALUES).tolist() for a in INT8_VALUES}
    bad = []

    async def tb(ctx):
        for a_hi, a_lo in pairs:
            ctx.set(dut.a_hi, a_hi)
            ctx.set(dut.a_lo, a_lo)
            got = _fields(ctx.get(dut.products), 2 * len(INT8_VALUES))
            if got != expect[a_hi] + expect[a_lo]:
                bad.append((a_hi, a_lo))
            await ctx.delay(1e-9)

    sim = Simulator(dut)  # combinational: no clock
    sim.add_testbench(tb)
    sim.run()
    assert not bad, f"{len(bad)} (a_hi, a_lo) pairs wrong, first {bad[:4]}"


#: ``$signed(x[hi:lo]) * $signed(y[hi:lo])`` in Amaranth's Verilog: the operand widths of one product.
_MUL = re.compile(r"\$signed\([^)]*?\[(\d+):(\d+)\]\) \* \$signed\([^)]*?\[(\d+):(\d+)\]\)")


@pytest.mark.parametrize(("rows", "packing", "narrow", "wide"), [(4, False, 16, 0), (4, True, 0, 8), (3, True, 4, 4)])
def test_engine_multiplications_fit_one_dsp_each(rows, packing, narrow, wide):
    """The engine module's multiplications: ``narrow`` 8 x 8 ones (one per PE) and ``wide`` packed
    27 x 8 ones (one per pair of rows and column), each within one DSP48E2 multiplier (27 x 18
    signed; tests/hw/test_synth.py shows Yosys mapping them so)."""
    cfg = dataclasses.replace(BASE, pe_rows=rows, dsp_packing=packing)
    verilog = split_modules(generate(GemmEngine(config=cfg), "gemm_engine"))["gemm_engine"]
    widths = [(int(a) - int(b) + 1, int(c) - int(d) + 1) for a, b, c, d in _MUL.findall(verilog)]
    assert len(widths) == verilog.count(" * ")
    assert sorted(widths) == sorted([(8, 8)] * narrow + [(DSP_A_BITS, 8)] * wide)


def test_dsp_packing_must_be_a_bool():
    assert BASE.dsp_packing is False
    with pytest.raises(TypeError, match="dsp_packing must be a bool, not 1"):
        dataclasses.replace(BASE, dsp_packing=1)
