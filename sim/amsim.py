"""Helpers for Amaranth-simulator tests (the fast tier): run a component with a clock, move
stream transfers.

* :func:`simulate` — run ``testbenches`` (``async def tb(ctx)``) against ``dut`` with a clock;
  optional VCD when ``VITFORGE_WAVES_AMARANTH`` names a folder.
* :func:`put` / :func:`get` — one transfer into / out of an ``amaranth.lib.stream`` interface.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from amaranth.sim import Simulator

#: Simulated clock period in seconds (the value only matters for waveforms).
CLOCK_PERIOD = 1e-8


def simulate(dut: Any, *testbenches: Callable, processes: tuple[Callable, ...] = (), name: str = "dut") -> None:
    """Simulate ``dut`` with a ``sync`` clock until every testbench returns."""
    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    for tb in testbenches:
        sim.add_testbench(tb)
    for proc in processes:
        sim.add_process(proc)
    folder = os.environ.get("VITFORGE_WAVES_AMARANTH")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with sim.write_vcd(str(Path(folder) / f"{name}.vcd")):
            sim.run()
    else:
        sim.run()


async def put(ctx, stream, payload) -> None:
    """Offer ``payload`` on ``stream`` until it is accepted."""
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload, payload)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def get(ctx, stream):
    """Take one transfer from ``stream``; returns its payload."""
    ctx.set(stream.ready, 1)
    (payload,) = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload
