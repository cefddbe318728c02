"""Residual adder: ``lanes`` lanes of :func:`vitforge.quant.ops.residual_add`, bit-exact.

``out = saturate(round_shift(a * mult_a + b * mult_b, shift))`` to int8, round half up; ``mult_a``,
``mult_b`` unsigned ``REQUANT_MULT_BITS``-bit, ``shift`` in ``0..REQUANT_MAX_SHIFT``.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from vitforge.quant.fixed import INT8

from .config import HwConfig
from .gemm import round_shift_saturate, word_layout


class ResidualAdder(wiring.Component):
    """Lane-wise residual add with requantization.

    Ports:
        input: stream of ``{a: lanes x int8, b: lanes x int8}`` (one scratchpad word of each).
        output: stream of ``lanes x int8``.
        mult_a, mult_b, shift: the requantization, held stable while a vector is processed.

    Latency :attr:`latency` cycle, one word per cycle; back-pressure stalls.
    """

    #: Cycles from an input transfer to its output being valid.
    latency = 1

    def __init__(self, *, config: HwConfig):
        if not isinstance(config, HwConfig):
            raise TypeError(f"config must be a HwConfig, not {type(config).__name__}")
        self._config = config
        word = word_layout(config)
        super().__init__({
            "input": In(stream.Signature(data.StructLayout({"a": word, "b": word}))),
            "output": Out(stream.Signature(word)),
            "mult_a": In(unsigned(config.mult_bits)),
            "mult_b": In(unsigned(config.mult_bits)),
            "shift": In(unsigned(config.shift_bits)),
        })

    @property
    def config(self) -> HwConfig:
        return self._config

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        adv = ~self.output.valid | self.output.ready
        m.d.comb += self.input.ready.eq(adv)
        with m.If(adv):
            m.d.sync += self.output.valid.eq(self.input.valid)
            for j in range(cfg.lanes):
                total = Signal(signed(cfg.act_bits + cfg.mult_bits + 2), name=f"sum{j}")
                m.d.comb += total.eq(self.input.payload.a[j] * self.mult_a + self.input.payload.b[j] * self.mult_b)
                m.d.sync += self.output.payload[j].eq(round_shift_saturate(m, total, self.shift, INT8.qmin, INT8.qmax))
        return m
