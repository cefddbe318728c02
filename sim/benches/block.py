"""cocotb bench of the accelerator top (hw/top.py EncoderTop) against the pure-quant references.

Run through :func:`vitforge.sim.benches.runner.run_bench`; params: ``config`` (HwConfig.to_json()), and
per test:

* ``gemm_programs``: ``gemm_cases`` — GEMM instructions (sim/block_ref.gemm_case arguments), each
  run as a one-instruction program from scratchpads, results read back through the host port
  and compared with quant.ops.gemm (a case with ``gelu`` sets the GEMM's fused-GELU flag and is
  compared with int_gelu of that; the config must have ``fuse_gelu``); the controller's cycle count
  must equal hw/cycles.py's.
* ``encoder_block``: ``n_tokens``, ``seed``, ``selector``, ``keep`` (``"mixed"``, ``"all"`` or
  ``"class_only"``): one encoder block (behind a token selector) compiled by hw/compiler.py
  (sim/block_ref.block_program), its LOAD table streamed into ``dma_in``,
  the output tokens taken from ``STORE`` on ``dma_out`` and compared bit for bit with
  sim/block_ref.reference; the cycle count is read from the design's ``cycles`` port.

Every write happens at a falling edge (see sim/benches/gemm.py).
"""

from __future__ import annotations

import dataclasses

import cocotb
import torch
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge

from vitforge.hw import timing
from vitforge.hw.compiler import INPUT_BLOB
from vitforge.hw.config import HwConfig
from vitforge.hw.cycles import CycleModel
from vitforge.hw.isa import Mem, assemble
from vitforge.quant.nonlinear import int_gelu
from vitforge.sim.benches import reference as block_ref
from vitforge.sim.benches.runner import bench_config
from vitforge.sim.scoreboard import assert_equal

#: Give up on a program after this many cycles.
MAX_CYCLES = 5_000_000


async def reset(dut) -> None:
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value = 1
    for name in ("start", "host_we", "dma_in__valid", "dma_out__ready"):
        getattr(dut, name).value = 0
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0


async def host_write(dut, mem: Mem, base: int, words: list[int]) -> None:
    """Write ``words`` from ``base`` into ``mem``, one per cycle."""
    for i, word in enumerate(words):
        await FallingEdge(dut.clk)
        dut.host_mem.value = int(mem)
        dut.host_addr.value = base + i
        dut.host_wdata.value = int(word)
        dut.host_we.value = 1
    await FallingEdge(dut.clk)
    dut.host_we.value = 0


async def host_read(dut, base: int, count: int) -> list[int]:
    """Read ``count`` activation words from ``base``."""
    out = []
    for i in range(count):
        await FallingEdge(dut.clk)
        dut.host_addr.value = base + i
        await FallingEdge(dut.clk)
        await ReadOnly()
        out.append(int(dut.host_rdata.value))
    return out


async def stream_words(dut, feed: list[int]) -> None:
    """Offer ``feed`` (the LOAD table's words) on ``dma_in``, in order, one per accepted transfer."""
    for word in feed:
        await FallingEdge(dut.clk)
        dut.dma_in__valid.value = 1
        dut.dma_in__payload.value = word
        await ReadOnly()
        while not dut.dma_in__ready.value:  # the transfer happens at the next rising edge
            await FallingEdge(dut.clk)
            await ReadOnly()
    await FallingEdge(dut.clk)
    dut.dma_in__valid.value = 0


async def run_program(dut) -> int:
    """Pulse start, wait for done; returns the design's cycle count (fails on ``error``)."""
    await FallingEdge(dut.clk)
    dut.start.value = 1
    await FallingEdge(dut.clk)
    dut.start.value = 0
    while not dut.done.value:
        await RisingEdge(dut.done)
    await ReadOnly()
    assert not dut.error.value, "controller stopped with error (an opcode whose unit is not built)"
    return int(dut.cycles.value)


@cocotb.test()
async def gemm_programs(dut):
    params = bench_config()
    if "gemm_cases" not in params:
        return
    cfg = HwConfig.from_json(params["config"])
    await reset(dut)
    for i, kwargs in enumerate(params["gemm_cases"]):
        gelu = bool(kwargs.get("gelu", False))
        case = block_ref.gemm_case(cfg, **{k: v for k, v in kwargs.items() if k != "gelu"})
        if gelu:  # the fused GELU (HwConfig.fuse_gelu): GEMM + GELU in one instruction
            case = dataclasses.replace(case, instr=block_ref.Instr(block_ref.Op.GEMM, **{**dict(case.instr.args),
                                                                                         "gelu": 1}))
        for mem, addr, words in case.preload:
            await host_write(dut, Mem.ACT if mem == "act" else Mem.WEIGHT, addr, words)
        await host_write(dut, Mem.PARAM, 0, case.param_words)
        await host_write(dut, Mem.IMEM, 0, assemble([case.instr, block_ref.Instr(block_ref.Op.END)]))
        cycles = await run_program(dut)
        ins = case.instr
        words = await host_read(dut, ins.dst_addr, ins.m * ins.dst_stride)
        got = block_ref.unpack_matrix(cfg, words, ins.m, ins.n, ins.dst_stride)
        from vitforge.quant.ops import gemm

        expected = gemm(case.a, case.b, case.bias, case.mult, case.shift)
        if gelu:
            expected = int_gelu(expected, cfg.numerics.gelu_in, cfg.numerics.gelu_out)
        assert_equal(got, expected, f"GEMM case {i} {kwargs}")
        # The cycle model (hw/timing.py, the operand cache's schedules included) is exact on the controller.
        modeled = timing.START_CYCLES + CycleModel(cfg).instr_cycles(ins, tokens=0) + timing.END_CYCLES
        assert cycles == modeled, f"GEMM case {i} {kwargs}: {cycles} cycles, the model says {modeled}"
        dut._log.info("GEMM case %d (%s) bit-exact in %d cycles, as modeled", i, kwargs, cycles)


@cocotb.test()
async def encoder_block(dut):
    params = bench_config()
    if "n_tokens" not in params:
        return
    cfg = HwConfig.from_json(params["config"])
    n, seed, keep = params["n_tokens"], params["seed"], params.get("keep", "mixed")
    selector = params["selector"]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(-128, 128, (n, cfg.max_embed_dim), generator=gen)
    p = block_ref.make_block_case(x, dim=cfg.max_embed_dim, heads=cfg.max_heads, mlp=cfg.max_mlp_dim,
                                  selector=selector, seed=seed, keep=keep, num=cfg.numerics)
    expected, kept = block_ref.reference(x, p, cfg.numerics)
    if selector:
        want = {"all": n, "class_only": 1}.get(keep)
        assert want is None or int(kept.sum()) == want, f"reference kept {int(kept.sum())} tokens, wanted {want}"
        assert keep != "mixed" or 1 < int(kept.sum()) < n, f"'mixed' kept {int(kept.sum())} of {n}"
    prog = block_ref.block_program(cfg, p, n)

    await reset(dut)
    await host_write(dut, Mem.IMEM, 0, assemble(prog.instrs))
    feed = prog.dma_words({INPUT_BLOB: block_ref.pack_matrix(cfg, x)})

    rows = expected.shape[0]
    per_row = cfg.row_words(cfg.max_embed_dim)
    stored: list[int] = []

    async def collect():
        await RisingEdge(dut.dma_out__valid)
        while len(stored) < rows * per_row:
            await FallingEdge(dut.clk)
            dut.dma_out__ready.value = 1
            await ReadOnly()
            if dut.dma_out__valid.value:
                stored.append(int(dut.dma_out__payload.value))
        await FallingEdge(dut.clk)
        dut.dma_out__ready.value = 0

    collector = cocotb.start_soon(collect())
    streamer = cocotb.start_soon(stream_words(dut, feed))
    cycles = await run_program(dut)
    await streamer
    tokens = int(dut.tokens.value)
    await collector
    if selector:
        assert tokens == rows, f"the selector produced {tokens} tokens, the reference {rows}"
    got = block_ref.unpack_matrix(cfg, stored, rows, cfg.max_embed_dim)
    assert_equal(got, expected, f"encoder block output ({rows} tokens)", shape=tuple(expected.shape))
    dut._log.info("encoder block: %d -> %d tokens bit-exact; %d cycles (%d instructions)",
                  n, rows, cycles, len(prog.instrs))
    print(f"VITFORGE_CYCLES {cycles} tokens {n}->{rows}")
