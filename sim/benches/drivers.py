"""The one cocotb stream driver and monitor every bench uses (the DataValidMonitor pattern of cocotb's
matrix_multiplier example): :func:`reset` starts the clock and holds reset with the inputs idle,
:func:`send` drives an ``amaranth.lib.stream`` port (``<port>__valid/payload/ready``) with random idle
cycles, :func:`receive` takes transfers with random back-pressure and hands them to the scoreboard
(:mod:`vitforge.sim.scoreboard`).

Values change at falling edges and handshakes are sampled in the read-only phase after them, so both
simulators see settled values at the rising edge, whenever a driver is started.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly

__all__ = ["receive", "reset", "send"]


async def reset(dut, inputs: Iterable[str] = (), signals: Iterable[str] = ()) -> None:
    """Start the clock and hold reset for two cycles with the stream ``inputs`` idle (``<port>__valid``
    low) and the listed ``signals`` low."""
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    for name in [f"{port}__valid" for port in inputs] + list(signals):
        getattr(dut, name).value = 0
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0


async def send(dut, port: str, words, rng: random.Random | None = None, p_idle: float = 0.0) -> None:
    """Drive stream ``port`` with ``words`` (packed payloads), honouring ready, with random idle cycles.

    Every write happens at a falling edge and every handshake is sampled in the read-only phase after
    it, so the rising edge sees settled values in both simulators; it may be called at any time.
    """
    valid, payload, ready = (getattr(dut, f"{port}__{s}") for s in ("valid", "payload", "ready"))
    for word in words:
        await FallingEdge(dut.clk)
        while rng is not None and rng.random() < p_idle:
            valid.value = 0
            await FallingEdge(dut.clk)
        payload.value = int(word)
        valid.value = 1
        while True:
            await ReadOnly()
            if ready.value:
                break  # the transfer happens at the next rising edge
            await FallingEdge(dut.clk)
    await FallingEdge(dut.clk)
    valid.value = 0


async def receive(dut, port: str, count: int, rng: random.Random, p_stall: float = 0.3,
                  max_cycles: int = 200_000, sink: list | None = None) -> list[int]:
    """The monitor: take ``count`` transfers (raw payload integers) from ``port`` with random back-pressure
    (ready low with probability ``p_stall`` each cycle), appended to ``sink`` if given."""
    valid, payload, ready = (getattr(dut, f"{port}__{s}") for s in ("valid", "payload", "ready"))
    out = [] if sink is None else sink
    start = len(out)
    for _ in range(max_cycles):
        if len(out) - start == count:
            break
        await FallingEdge(dut.clk)
        take = int(rng.random() >= p_stall)
        ready.value = take
        await ReadOnly()
        if take and valid.value:
            out.append(int(payload.value))
    await FallingEdge(dut.clk)
    ready.value = 0
    if len(out) - start != count:
        raise AssertionError(f"{port}: {len(out) - start} of {count} transfers arrived in {max_cycles} cycles")
    return out
