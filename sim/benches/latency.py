"""cocotb bench: per-instruction cycles of a compiled program on hw/top.py EncoderTop (Verilator/Icarus).

Run through :func:`vitforge.sim.latency_calib.profile_program_rtl`; params: ``config``
(HwConfig.to_json()), ``job`` (a JSON file with the program's instruction ``words`` and the ``feed``,
every word ``dma_in`` carries) and ``out`` (the JSON file this bench writes: ``issue`` and ``instr``,
the ``cycles`` port at each ``issue`` pulse and the instruction index; ``total``; ``tokens`` at each
issue). ``dma_in`` offers a word every cycle (the ideal stream), ``dma_out`` is always ready.
"""

from __future__ import annotations

import json
from pathlib import Path

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from vitforge.hw.isa import Mem
from vitforge.sim.benches.block import host_write, reset, stream_words
from vitforge.sim.benches.runner import bench_config


@cocotb.test()
async def profile(dut):
    params = bench_config()
    job = json.loads(Path(params["job"]).read_text())
    await reset(dut)
    await host_write(dut, Mem.IMEM, 0, job["words"])
    dut.dma_out__ready.value = 1
    issues: list[tuple[int, int, int]] = []

    async def watch():
        while True:
            await RisingEdge(dut.issue)
            await ReadOnly()
            issues.append((int(dut.instr.value), int(dut.cycles.value), int(dut.tokens.value)))

    await FallingEdge(dut.clk)
    dut.start.value = 1
    await FallingEdge(dut.clk)
    dut.start.value = 0
    watcher = cocotb.start_soon(watch())
    streamer = cocotb.start_soon(stream_words(dut, job["feed"]))
    while not dut.done.value:
        await RisingEdge(dut.done)
    await ReadOnly()
    assert not dut.error.value, "controller stopped with error"
    total = int(dut.cycles.value)
    watcher.cancel()
    await streamer
    Path(params["out"]).write_text(json.dumps({"total": total, "issues": issues}))
