"""Sequential restoring divider and digit-by-digit integer square root (one result bit per cycle).

Both are the exact integer operations of the reference: :class:`Divider` gives
``floor(dividend / divisor)`` (the reciprocals ``floor(2**K / S)`` of softmax, LayerNorm and the
token selector, and the selector's fused score), :class:`Isqrt` gives ``floor(sqrt(v))``
(:func:`vitforge.quant.nonlinear.isqrt`).
"""

from __future__ import annotations

from amaranth import Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .poly_unit import check_int

__all__ = ["Divider", "Isqrt"]


class Divider(wiring.Component):
    """``floor(dividend / divisor)`` by restoring division, one quotient bit per cycle.

    Args (keyword-only):
        dividend_width, divisor_width: operand widths (unsigned), 1..64.
        quotient_width: quotient bits computed (1..dividend_width, default ``dividend_width``).
            Fewer bits take fewer cycles; the caller guarantees ``quotient < 2**quotient_width``.

    Ports:
        i: ``stream`` of ``{dividend, divisor}``; accepted only while idle.
        o: ``stream`` of ``{quotient: unsigned(quotient_width)}``, held until taken.

    Latency: :attr:`latency` = ``quotient_width + 1`` cycles from the accepted input to a valid
    output. Throughput: one division per ``latency + 1`` cycles with ``o.ready`` high.
    Saturation: when the true quotient does not fit (including ``divisor == 0``) the result is
    ``2**quotient_width - 1``.
    """

    def __init__(self, *, dividend_width: int, divisor_width: int, quotient_width: int | None = None):
        check_int(self, "dividend_width", dividend_width, 1, 64)
        check_int(self, "divisor_width", divisor_width, 1, 64)
        if quotient_width is None:
            quotient_width = dividend_width
        check_int(self, "quotient_width", quotient_width, 1, dividend_width)
        self._widths = (dividend_width, divisor_width, quotient_width)
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "dividend": unsigned(dividend_width), "divisor": unsigned(divisor_width)}))),
            "o": Out(stream.Signature(data.StructLayout({"quotient": unsigned(quotient_width)}))),
        })

    @property
    def quotient_width(self) -> int:
        return self._widths[2]

    @property
    def latency(self) -> int:
        return self.latency_for(self.quotient_width)

    @staticmethod
    def latency_for(quotient_width: int) -> int:
        """:attr:`latency` of a divider computing ``quotient_width`` bits (no elaboration needed)."""
        return quotient_width + 1

    def elaborate(self, platform):
        m = Module()
        dw, vw, qw = self._widths
        rem = Signal(dw)
        dsh = Signal(vw + qw - 1)  # divisor << bit, shifted right once per step
        quot = Signal(qw)
        steps = Signal(range(qw + 1))
        busy = Signal()

        m.d.comb += [self.i.ready.eq(~busy & ~self.o.valid), self.o.payload.quotient.eq(quot)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [
                rem.eq(self.i.payload.dividend),
                dsh.eq(self.i.payload.divisor << (qw - 1)),
                quot.eq(0),
                steps.eq(qw),
                busy.eq(1),
            ]
        with m.If(busy):
            take = rem >= dsh
            m.d.sync += [quot.eq((quot << 1) | take), dsh.eq(dsh >> 1), steps.eq(steps - 1)]
            with m.If(take):
                m.d.sync += rem.eq(rem - dsh)
            with m.If(steps == 1):
                m.d.sync += [busy.eq(0), self.o.valid.eq(1)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m


class Isqrt(wiring.Component):
    """``floor(sqrt(v))`` by the binary digit-by-digit method, one result bit per cycle.

    Args (keyword-only):
        width: width of ``v`` (unsigned), 1..64.

    Ports:
        i: ``stream`` of ``unsigned(width)``; accepted only while idle.
        o: ``stream`` of ``unsigned(ceil(width / 2))``, held until taken.

    Latency: :attr:`latency` = ``ceil(width / 2) + 1`` cycles. Exact for every input.
    """

    def __init__(self, *, width: int):
        check_int(self, "width", width, 1, 64)
        self._width = width
        super().__init__({
            "i": In(stream.Signature(unsigned(width))),
            "o": Out(stream.Signature(unsigned(self.result_width))),
        })

    @property
    def result_width(self) -> int:
        return (self._width + 1) // 2

    @property
    def latency(self) -> int:
        return self.latency_for(self._width)

    @staticmethod
    def latency_for(width: int) -> int:
        """:attr:`latency` of a square root of ``width`` bits (no elaboration needed)."""
        return (width + 1) // 2 + 1

    def elaborate(self, platform):
        m = Module()
        rw = self.result_width
        op = Signal(2 * rw)
        res = Signal(2 * rw)  # holds (root << remaining_bits) during the iteration
        one = Signal(2 * rw)  # the current power of four
        busy = Signal()

        m.d.comb += [self.i.ready.eq(~busy & ~self.o.valid), self.o.payload.eq(res[:rw])]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [op.eq(self.i.payload), res.eq(0), one.eq(1 << (2 * rw - 2)), busy.eq(1)]
        with m.If(busy):
            trial = res + one
            with m.If(op >= trial):
                m.d.sync += [op.eq(op - trial), res.eq((res >> 1) + one)]
            with m.Else():
                m.d.sync += res.eq(res >> 1)
            m.d.sync += one.eq(one >> 2)
            with m.If(one == 1):
                m.d.sync += [busy.eq(0), self.o.valid.eq(1)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m
