"""The one cocotb stream driver and monitor every bench uses (the DataValidMonitor pattern of cocotb's
matrix_multiplier example): :func:`reset` starts the clock and holds reset with the inputs idle,
:func:`send` drives an ``amaranth.lib.stream`` port (``<port>__valid/payload/ready``) with random idle
cycles, :func:`receive` takes transfers with random back-pressure and hands them to the scoreboard
(:mod:`vitforge.sim.scoreboard`).

Values change just after rising edges and handshakes are sampled at falling edges, so both simulators
see settled values at the rising edge.
"""

from __future__ import annotations

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge

__all__ = ["receive", "reset", "send"]


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
