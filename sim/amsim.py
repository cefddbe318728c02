"""Helpers for Amaranth-simulator tests (the fast tier): run a component with a clock, move
stream transfers.

* :func:`simulate` — run ``testbenches`` (``async def tb(ctx)``) against ``dut`` with a clock;
  optional VCD when ``VITFORGE_WAVES_AMARANTH`` names a folder.
* :func:`put` / :func:`get` — one transfer into / out of an ``amaranth.lib.stream`` interface;
  :func:`send` / :func:`recv` — many, with random idle cycles and back-pressure.
* :func:`load_and_start` / :func:`run_encoder_top` — a program on EncoderTop.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from amaranth.sim import Simulator

#: Simulated clock period in seconds (the value only matters for waveforms).
CLOCK_PERIOD = 1e-8


def simulate(dut: Any, *testbenches: Callable, processes: tuple[Callable, ...] = (), background: Sequence = (),
             name: str = "dut") -> None:
    """Simulate ``dut`` with a ``sync`` clock until every testbench returns (``background`` testbenches
    and ``processes`` run beside them without holding the simulation up)."""
    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    for tb in testbenches:
        sim.add_testbench(tb)
    for tb in background:
        sim.add_testbench(tb, background=True)
    for proc in processes:
        sim.add_process(proc)
    folder = os.environ.get("VITFORGE_WAVES_AMARANTH")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with sim.write_vcd(str(Path(folder) / f"{name}.vcd")):
            sim.run()
    else:
        sim.run()


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


async def load_and_start(ctx, dut, words: list[int]) -> None:
    """Write instruction ``words`` into an EncoderTop's instruction memory through the host port,
    make ``dma_out`` ready and pulse ``start``."""
    from vitforge.hw.isa import Mem

    for i, word in enumerate(words):
        ctx.set(dut.host_mem, int(Mem.IMEM))
        ctx.set(dut.host_addr, i)
        ctx.set(dut.host_wdata, word)
        ctx.set(dut.host_we, 1)
        await ctx.tick()
    ctx.set(dut.host_we, 0)
    ctx.set(dut.dma_out.ready, 1)
    ctx.set(dut.start, 1)
    await ctx.tick()
    ctx.set(dut.start, 0)


def run_encoder_top(cfg, program, inputs: dict[str, list[int]], max_cycles: int = 2_000_000) -> dict:
    """Run a :class:`vitforge.hw.compiler.Program` on :class:`vitforge.hw.top.EncoderTop`.

    The instructions go in through the host port; ``dma_in`` carries
    ``program.dma_words(inputs)`` (the LOAD table, in order) whenever the design takes it; every
    ``dma_out`` word is collected. Returns ``{"stored", "cycles", "tokens", "error", "done",
    "dma_left"}`` (``dma_left``: words the program never took).
    """
    from vitforge.hw.isa import assemble
    from vitforge.hw.top import EncoderTop

    dut = EncoderTop(config=cfg)
    feed = program.dma_words(inputs)
    out: dict = {"stored": []}

    async def tb(ctx):
        await load_and_start(ctx, dut, assemble(program.instrs))
        fed = 0
        for _ in range(max_cycles):
            if ctx.get(dut.done):
                break
            if fed < len(feed):
                ctx.set(dut.dma_in.valid, 1)
                ctx.set(dut.dma_in.payload, feed[fed])
            else:
                ctx.set(dut.dma_in.valid, 0)
            took = fed < len(feed) and ctx.get(dut.dma_in.ready)
            if ctx.get(dut.dma_out.valid):
                out["stored"].append(ctx.get(dut.dma_out.payload))
            await ctx.tick()
            fed += bool(took)
        out.update(cycles=ctx.get(dut.cycles), tokens=ctx.get(dut.tokens), error=ctx.get(dut.error),
                   done=ctx.get(dut.done), dma_left=len(feed) - fed)

    simulate(dut, tb, name="encoder_top")
    return out
