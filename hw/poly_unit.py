"""The piecewise-quadratic polynomial unit, and the fixed-point helpers shared by the nonlinear units.

:class:`PolyUnit` computes :meth:`vitforge.quant.poly.PiecewisePoly.evaluate` bit for bit: one
coefficient-ROM read, two multiplies and two adds, in a three-stage elastic pipeline. The
coefficients are taken from the :class:`~vitforge.quant.poly.PiecewisePoly` it is given (the
tables in :mod:`vitforge.quant.poly_tables`); nothing here restates them.

The helpers :func:`round_shift` and :func:`saturate` build the Amaranth expressions of
:func:`vitforge.quant.fixed.round_shift` and :func:`vitforge.quant.fixed.saturate`;
:class:`PipelineRegister` is a one-entry stream register.
"""

from __future__ import annotations

import torch
from amaranth import Array, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.hdl import Value, ValueLike
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from vitforge.quant.fixed import FixedFormat
from vitforge.quant.poly import PiecewisePoly

__all__ = ["PipelineRegister", "PolyUnit", "check_int", "reject", "round_shift", "saturate", "signed_width_for"]


def reject(component, error: Exception) -> Exception:
    """Mark a component whose parameters were rejected as never to be elaborated; return ``error``.

    (Amaranth warns about every constructed-but-unused elaboratable, including one whose
    ``__init__`` raised.)
    """
    component._MustUse__silence = True
    return error


def check_int(component, name: str, value, lo: int, hi: int | None = None) -> int:
    """Check a keyword parameter is an integer in ``lo..hi``; the error quotes the value."""
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        valid = f"an integer in {lo}..{hi}" if hi is not None else f"an integer >= {lo}"
        raise reject(component, ValueError(f"{name} must be {valid}, not {value!r}"))
    return value


def signed_width_for(lo: int, hi: int) -> int:
    """Smallest two's-complement width holding every integer in ``[lo, hi]``."""
    if lo > hi:
        raise ValueError(f"empty range [{lo}, {hi}]")
    return max(Shape.cast(range(lo, hi + 1)).width + (0 if lo < 0 else 1), 1)


def round_shift(x: ValueLike, shift: int | Value) -> Value:
    """``floor(x / 2**shift + 1/2)`` (round half up), exact at the natural Amaranth width.

    ``shift`` is a non-negative ``int`` or an unsigned :class:`Value` (a barrel shifter).
    """
    x = Value.cast(x)
    if isinstance(shift, int):
        if shift < 0:
            raise ValueError(f"round_shift amount must be non-negative, not {shift}")
        if shift == 0:
            return x
        return (x + (1 << (shift - 1))) >> shift
    shift = Value.cast(shift)
    if shift.shape().signed:
        raise TypeError(f"a variable round_shift amount must be unsigned, not {shift.shape()}")
    half = (Const(1, 1) << shift) >> 1  # 2**(shift-1), or 0 for shift = 0
    return (x + half) >> shift


def saturate(x: ValueLike, fmt: FixedFormat) -> Value:
    """Clamp ``x`` to the range of ``fmt`` and give it ``fmt``'s width (exact: nothing wraps)."""
    x = Value.cast(x)
    clamped = Mux(x > fmt.qmax, fmt.qmax, Mux(x < fmt.qmin, fmt.qmin, x))
    bits = clamped[: fmt.bits]
    return bits.as_signed() if fmt.signed else bits


class PipelineRegister(wiring.Component):
    """A one-entry stream register: cuts the combinational path of ``valid`` and ``payload``.

    Ports: ``i`` (in) and ``o`` (out), both ``stream.Signature(shape)``.

    Latency: 1 cycle. Throughput: one transfer per cycle while ``o.ready`` is high (``i.ready``
    is ``o.ready | ~o.valid``, a combinational path).
    """

    def __init__(self, shape):
        self._shape = shape
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    latency = 1

    def elaborate(self, platform):
        m = Module()
        load = self.o.ready | ~self.o.valid
        m.d.comb += self.i.ready.eq(load)
        with m.If(load):
            m.d.sync += [self.o.valid.eq(self.i.valid), self.o.payload.eq(self.i.payload)]
        return m


#: The default tag: nothing carried.
NO_TAG = unsigned(0)


class PolyUnit(wiring.Component):
    """Pipelined evaluation of a :class:`~vitforge.quant.poly.PiecewisePoly` (bit-exact).

    Args (keyword-only):
        poly: the coefficient table (e.g. :data:`vitforge.quant.poly_tables.GELU_RESIDUAL`).
        in_frac: fractional bits of the input code ``a`` (``Q.in_frac``, unsigned).
        in_width: width of ``a`` in bits (1..32).
        tag_shape: a shape carried unchanged from input to output alongside the value (for the
            sign, the original input, ... of the unit around it); ``unsigned(0)`` by default.

    Ports:
        i: ``stream.Signature(StructLayout({"a": unsigned(in_width), "tag": tag_shape}))``.
        o: ``stream.Signature(StructLayout({"y": signed(out_width), "tag": tag_shape}))``; ``y``
            is ``poly.evaluate(a, in_frac)`` in ``Q.COEF_FRAC``; ``out_width`` is the smallest
            width holding every value the table can produce for ``in_width``-bit inputs.

    Latency: :attr:`latency` (3) cycles from an accepted input to its output being valid.
    Throughput: one value per cycle while ``o.ready`` is high; elastic (back-pressure stalls the
    whole pipeline, nothing is dropped). No saturation: the result is exact.
    """

    latency = 3

    def __init__(self, *, poly: PiecewisePoly, in_frac: int, in_width: int, tag_shape=NO_TAG):
        if not isinstance(poly, PiecewisePoly):
            raise reject(self, TypeError(f"poly must be a PiecewisePoly, not {type(poly).__name__}"))
        check_int(self, "in_frac", in_frac, 0)
        check_int(self, "in_width", in_width, 1, 32)
        try:
            self._seg_shift = poly.seg_shift(in_frac)  # raises if in_frac is too coarse
        except ValueError as error:
            raise reject(self, error) from None
        self._poly, self._in_frac, self._in_width = poly, in_frac, in_width
        lo, hi = self._output_range()
        self._out_width = signed_width_for(lo, hi)
        self._in_layout = data.StructLayout({"a": unsigned(in_width), "tag": tag_shape})
        self._out_layout = data.StructLayout({"y": signed(self._out_width), "tag": tag_shape})
        super().__init__({
            "i": In(stream.Signature(self._in_layout)),
            "o": Out(stream.Signature(self._out_layout)),
        })

    def _output_range(self) -> tuple[int, int]:
        # Every reachable input inside the domain (at most 2**in_width codes), plus the tail.
        top = min(1 << self._in_width, (1 << self._poly.seg_bits) << self._seg_shift)
        y = self._poly.evaluate(torch.arange(top, dtype=torch.int64), self._in_frac)
        lo, hi = int(y.min()), int(y.max())
        if top < 1 << self._in_width:
            lo, hi = min(lo, self._poly.tail), max(hi, self._poly.tail)
        return lo, hi

    @property
    def poly(self) -> PiecewisePoly:
        return self._poly

    @property
    def in_frac(self) -> int:
        return self._in_frac

    @property
    def in_width(self) -> int:
        return self._in_width

    @property
    def out_width(self) -> int:
        return self._out_width

    def elaborate(self, platform):
        m = Module()
        poly, f, shift = self._poly, self._in_frac, self._seg_shift
        nseg = 1 << poly.seg_bits

        # Elastic pipeline: stage k loads when it is empty or the next stage takes its value.
        valid = [Signal(name=f"s{k}_valid") for k in range(1, 4)]
        ready = [Signal(name=f"s{k}_ready") for k in range(1, 4)]
        m.d.comb += [
            ready[2].eq(self.o.ready | ~valid[2]),
            ready[1].eq(ready[2] | ~valid[1]),
            ready[0].eq(ready[1] | ~valid[0]),
            self.i.ready.eq(ready[0]),
            self.o.valid.eq(valid[2]),
        ]
        srcs = [self.i.valid, *valid[:2]]
        for k in range(3):
            with m.If(ready[k]):
                m.d.sync += valid[k].eq(srcs[k])

        # Stage 1: segment index, offset, coefficient ROM.
        a = self.i.payload.a
        seg_full = a >> shift
        beyond = seg_full >= nseg
        seg = Mux(beyond, nseg - 1, seg_full)[: max(poly.seg_bits, 1)]
        coef_w = signed_width_for(min(min(c) for c in poly.coeffs), max(max(c) for c in poly.coeffs))
        rom = [Array(Const(c[j], signed(coef_w)) for c in poly.coeffs) for j in range(3)]
        t_width = max(shift, 1) + 1  # t < 2**shift, held signed for the signed multiplies
        s1_t = Signal(signed(t_width))
        s1_c = [Signal(signed(coef_w), name=f"s1_c{j}") for j in range(3)]
        s1_beyond, s1_tag = Signal(), Signal.like(self.i.payload.tag)
        with m.If(ready[0]):
            m.d.sync += [
                s1_t.eq(a - (seg << shift)),
                *(s1_c[j].eq(rom[j][seg]) for j in range(3)),
                s1_beyond.eq(beyond),
                s1_tag.eq(self.i.payload.tag),
            ]

        # Stage 2: acc = ((c2 * t) >> in_frac) + c1.
        acc1 = ((s1_c[2] * s1_t) >> f) + s1_c[1]
        s2_acc = Signal(acc1.shape())
        s2_t, s2_c0 = Signal.like(s1_t), Signal.like(s1_c[0])
        s2_beyond, s2_tag = Signal(), Signal.like(s1_tag)
        with m.If(ready[1]):
            m.d.sync += [s2_acc.eq(acc1), s2_t.eq(s1_t), s2_c0.eq(s1_c[0]),
                         s2_beyond.eq(s1_beyond), s2_tag.eq(s1_tag)]

        # Stage 3: acc = ((acc * t) >> in_frac) + c0; the tail beyond the domain.
        acc2 = ((s2_acc * s2_t) >> f) + s2_c0
        with m.If(ready[2]):
            m.d.sync += [
                self.o.payload.y.eq(Mux(s2_beyond, poly.tail, acc2)),
                self.o.payload.tag.eq(s2_tag),
            ]
        return m
