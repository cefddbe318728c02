"""cocotb stream drivers and bench tops shared by ``bench_nonlinear`` and ``bench_selector``.

The tops put several units side by side in one Verilog module (one build per simulator for
all of them); each unit's ports keep their names behind a prefix (``gelu_i__valid``, ...).
Payloads are packed and unpacked with the units' own layouts (``layout.const(...).as_bits()``,
``layout.from_bits(...)``), so a width change in a config needs no edit here.
"""

from __future__ import annotations

import random

import cocotb
from amaranth import Module
from amaranth.lib import wiring
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge

from vitforge.hw.config import HwConfig
from vitforge.hw.nonlinear import GeluUnit, LayerNormUnit, SigmoidUnit, SoftmaxUnit
from vitforge.hw.selector import TokenMean, TokenSelector

__all__ = ["NonlinearTop", "SelectorTop", "receive", "reset", "send"]


class _Side(wiring.Component):
    """Units side by side; every port of unit ``u`` appears as ``u_<port>``."""

    def __init__(self, units: dict[str, wiring.Component]):
        self._units = units
        super().__init__({f"{prefix}_{name}": member for prefix, unit in units.items()
                          for name, member in unit.signature.members.items()})

    def elaborate(self, platform):
        m = Module()
        for prefix, unit in self._units.items():
            m.submodules[prefix] = unit
            for name, member in unit.signature.members.items():
                outer, inner = getattr(self, f"{prefix}_{name}"), getattr(unit, name)
                if member.is_signature:
                    if member.flow == wiring.In:
                        wiring.connect(m, wiring.flipped(outer), inner)
                    else:
                        wiring.connect(m, inner, wiring.flipped(outer))
                elif member.flow == wiring.In:
                    m.d.comb += inner.eq(outer)
                else:
                    m.d.comb += outer.eq(inner)
        return m


class NonlinearTop(_Side):
    """GELU, sigmoid, softmax (rows up to ``max_tokens``) and LayerNorm (rows up to ``max_embed_dim``)."""

    def __init__(self, *, config: HwConfig):
        num = config.numerics
        super().__init__({
            "gelu": GeluUnit(numerics=num),
            "sigmoid": SigmoidUnit(numerics=num),
            "softmax": SoftmaxUnit(numerics=num, max_len=config.max_tokens),
            "ln": LayerNormUnit(numerics=num, max_dim=config.max_embed_dim),
        })


class SelectorTop(_Side):
    """The token selector (``max_heads``, ``max_tokens``, ``max_embed_dim``) and a token-mean unit."""

    def __init__(self, *, config: HwConfig):
        super().__init__({
            "sel": TokenSelector(heads=config.max_heads, max_tokens=config.max_tokens, max_dim=config.max_embed_dim),
            "mean": TokenMean(max_len=config.max_tokens),
        })


async def reset(dut, idle_inputs: list[str]) -> None:
    """Start the clock, hold reset for two cycles with the listed stream inputs idle."""
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    for port in idle_inputs:
        getattr(dut, f"{port}__valid").value = 0
    await ClockCycles(dut.clk, 2)  # returns just after a rising edge, where the drivers start
    dut.rst.value = 0


async def send(dut, port: str, words, rng: random.Random | None = None, p_idle: float = 0.0) -> None:
    """Drive stream ``port`` with ``words`` (packed payloads), honouring ready; random idle cycles.

    Call just after a rising edge: values change after rising edges, ready is sampled at falling edges.
    """
    valid, payload, ready = (getattr(dut, f"{port}__{s}") for s in ("valid", "payload", "ready"))
    for word in words:
        while rng is not None and rng.random() < p_idle:
            valid.value = 0
            await RisingEdge(dut.clk)
        payload.value = int(word)
        valid.value = 1
        while True:
            await FallingEdge(dut.clk)
            if ready.value:
                break
        await RisingEdge(dut.clk)  # the transfer
    valid.value = 0


async def receive(dut, port: str, count: int, rng: random.Random, p_stall: float = 0.3,
                  max_cycles: int = 200_000, sink: list | None = None) -> list[int]:
    """Take ``count`` transfers (raw payload integers) from ``port`` with random back-pressure."""
    valid, payload, ready = (getattr(dut, f"{port}__{s}") for s in ("valid", "payload", "ready"))
    out = [] if sink is None else sink
    start = len(out)
    for _ in range(max_cycles):
        if len(out) - start == count:
            break
        ready.value = int(rng.random() >= p_stall)
        await FallingEdge(dut.clk)
        if valid.value and ready.value:
            out.append(int(payload.value))
        await RisingEdge(dut.clk)
    ready.value = 0
    if len(out) - start != count:
        raise AssertionError(f"{port}: {len(out) - start} of {count} transfers arrived in {max_cycles} cycles")
    return out
