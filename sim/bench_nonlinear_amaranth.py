"""Stream drivers for Amaranth-simulator tests of the nonlinear units and the token selector.

Amaranth 0.5 async testbenches: :func:`send` drives an ``amaranth.lib.stream`` input with
optional random idle cycles, :func:`recv` drains an output with optional random back-pressure,
:func:`run` elaborates and simulates a component with any number of such testbenches, and
:func:`first_mismatch` is the scoreboard message every test uses (first differing index).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence

from amaranth.sim import Simulator

__all__ = ["first_mismatch", "recv", "run", "send"]

#: Clock period of the simulations (the value is irrelevant to the results; 1 MHz keeps VCDs readable).
CLOCK_PERIOD = 1e-6


async def send(ctx, port, items: Iterable, *, rng: random.Random | None = None, p_idle: float = 0.0) -> None:
    """Drive ``items`` (payload values: ints or dicts for struct layouts) into stream ``port``."""
    for item in items:
        while rng is not None and rng.random() < p_idle:
            ctx.set(port.valid, 0)
            await ctx.tick()
        ctx.set(port.payload, item)
        ctx.set(port.valid, 1)
        await ctx.tick().until(port.ready)
    ctx.set(port.valid, 0)


async def recv(
    ctx,
    port,
    count: int,
    *,
    rng: random.Random | None = None,
    p_stall: float = 0.0,
    max_cycles: int = 50_000,
    convert: Callable = lambda payload: payload,
) -> list:
    """Take ``count`` transfers from stream ``port``; ``convert`` maps each sampled payload.

    Raises:
        TimeoutError: fewer than ``count`` transfers arrived within ``max_cycles`` cycles.
    """
    out: list = []
    for _ in range(max_cycles):
        if len(out) == count:
            break
        ready = not (rng is not None and rng.random() < p_stall)
        ctx.set(port.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(port.valid, port.payload)
        if valid and ready:
            out.append(convert(payload))
    ctx.set(port.ready, 0)
    if len(out) != count:
        raise TimeoutError(f"{len(out)} of {count} transfers arrived within {max_cycles} cycles")
    return out


def run(dut, *testbenches, vcd: str | None = None, background: Sequence = ()) -> None:
    """Simulate ``dut`` with a clock and the given async testbenches until all of them finish."""
    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    for tb in testbenches:
        sim.add_testbench(tb)
    for tb in background:
        sim.add_testbench(tb, background=True)
    if vcd is None:
        sim.run()
    else:
        with sim.write_vcd(vcd):
            sim.run()


def first_mismatch(got: Sequence[int], want: Sequence[int], what: str = "output") -> str | None:
    """``None`` if equal, else a message naming the first differing index and both values."""
    got, want = list(got), list(want)
    for k, (g, w) in enumerate(zip(got, want, strict=False)):
        if g != w:
            return f"{what}[{k}]: got {g}, expected {w} (of {len(want)} elements)"
    if len(got) != len(want):
        return f"{what}: got {len(got)} elements, expected {len(want)}"
    return None
