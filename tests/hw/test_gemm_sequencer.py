"""GemmSequencer in the Amaranth simulator: GEMM instructions from scratchpads vs quant.ops.gemm.

The scratchpads are ``amaranth.lib.memory`` memories preloaded through their ``init``; results
are read back from the activation memory's data after ``busy`` falls. Cases cover M/N/K not
multiples of the array, row strides wider than the matrix, ``b_trans`` (Q K^T), ``b_act``
(attn x V), K = 1 and saturation.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from vitforge.hw import timing
from vitforge.hw.config import BASE, HwConfig
from vitforge.hw.gemm import GemmSequencer
from vitforge.hw.isa import FIELDS, Op
from vitforge.quant.ops import gemm
from vitforge.sim.amsim import simulate
from vitforge.sim.benches.reference import GemmCase, gemm_case, unpack_matrix
from vitforge.sim.scoreboard import assert_equal

#: A small config (4x4 array, small memories) so that the Python simulator stays fast.
SMALL = dataclasses.replace(BASE, act_depth=2048, weight_depth=512, param_depth=16, imem_depth=16,
                            max_tokens=9, max_embed_dim=16, max_mlp_dim=32, max_heads=1)
#: A non-square array with fewer rows than lanes.
ODD = dataclasses.replace(SMALL, pe_rows=3, pe_cols=4)
#: More rows than lanes: the A reads, not the B reads, bound a block.
TALL = dataclasses.replace(SMALL, pe_rows=8, pe_cols=4)


class _Harness(wiring.Component):
    """GemmSequencer with preloaded scratchpads (test-only)."""

    def __init__(self, cfg: HwConfig, act: list[int], wt: list[int], prm: list[int]):
        from amaranth.lib import data

        self._cfg = cfg
        self.act = Memory(shape=cfg.word_bits, depth=cfg.act_depth, init=act)
        self.wt = Memory(shape=cfg.word_bits, depth=cfg.weight_depth, init=wt)
        self.prm = Memory(shape=cfg.param_word_bits, depth=cfg.param_depth, init=prm)
        self.seq = GemmSequencer(config=cfg)
        super().__init__({"start": In(1), "instr": In(data.StructLayout(dict(FIELDS[Op.GEMM]))), "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.seq = seq = self.seq
        m.submodules.act = self.act
        m.submodules.wt = self.wt
        m.submodules.prm = self.prm
        ar, wr, pr = self.act.read_port(), self.wt.read_port(), self.prm.read_port()
        aw = self.act.write_port()
        m.d.comb += [
            seq.start.eq(self.start), seq.instr.eq(self.instr), self.busy.eq(seq.busy),
            ar.addr.eq(seq.act_raddr), seq.act_rdata.eq(ar.data),
            wr.addr.eq(seq.wt_raddr), seq.wt_rdata.eq(wr.data),
            pr.addr.eq(seq.prm_raddr), seq.prm_rdata.eq(pr.data),
            aw.addr.eq(seq.act_waddr), aw.data.eq(seq.act_wdata), aw.en.eq(seq.act_we),
        ]
        return m


def run_case(cfg: HwConfig, case: GemmCase) -> tuple[torch.Tensor, int]:
    """Run one GEMM instruction; returns (the int8 result read from the act scratchpad, cycles busy)."""
    act = [0] * cfg.act_depth
    wt = [0] * cfg.weight_depth
    for mem, addr, words in case.preload:
        target = act if mem == "act" else wt
        target[addr:addr + len(words)] = words
    dut = _Harness(cfg, act, wt, case.param_words)
    instr = case.instr
    result = {}

    async def tb(ctx):
        ctx.set(dut.instr, {name: value for name, value in instr.args})
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        cycles = 0
        while ctx.get(dut.busy):
            await ctx.tick()
            cycles += 1
            assert cycles < 20_000, "GemmSequencer never finished"
        await ctx.tick()
        words = [ctx.get(dut.act.data[instr.dst_addr + i]) for i in range(instr.m * instr.dst_stride)]
        result["cycles"] = cycles
        result["words"] = [int(wd) for wd in words]

    simulate(dut, tb, name="gemm_sequencer")
    got = unpack_matrix(cfg, result["words"], instr.m, instr.n, instr.dst_stride)
    return got, result["cycles"]


CASES = [
    # name, m, k, n, b_trans, b_act, extra stride words, saturate
    ("square", 4, 4, 4, False, False, 0, False),
    ("ragged", 7, 10, 9, False, False, 1, False),
    ("k1", 5, 1, 6, False, False, 0, False),
    ("qkT", 9, 8, 9, True, True, 1, False),
    ("attnV", 9, 9, 8, False, True, 0, False),
    ("wt_trans", 6, 5, 7, True, False, 2, False),
    ("saturate", 5, 13, 5, False, False, 0, True),
    ("k_tail1", 9, 9, 5, False, False, 0, False),  # a one-step last K block
    ("many_tiles", 13, 21, 11, False, False, 0, False),
    ("k2_trans", 10, 2, 9, True, False, 0, False),  # two-step blocks: drain-bound tiles
]


@pytest.mark.parametrize("cfg", [SMALL, ODD, TALL], ids=["4x4", "3x4", "8x4"])
@pytest.mark.parametrize("name,m,k,n,b_trans,b_act,pad,sat", CASES, ids=[c[0] for c in CASES])
def test_sequencer_matches_quant(cfg, name, m, k, n, b_trans, b_act, pad, sat):
    case = gemm_case(cfg, m=m, k=k, n=n, b_trans=b_trans, b_act=b_act, pad=pad, saturate=sat,
                     seed=hash(name) % 1000 + m)
    got, cycles = run_case(cfg, case)
    expected = gemm(case.a, case.b, case.bias, case.mult, case.shift)
    assert_equal(got, expected, f"GEMM {name} m={m} k={k} n={n} b_trans={b_trans} b_act={b_act}")
    if sat:
        assert int(expected.max()) == 127 and int(expected.min()) == -128, "case does not saturate"
    # The cycle model (hw/timing.py) is exact on the sequencer alone.
    assert cycles == timing.gemm_busy_cycles(cfg, m, k, n, b_act=b_act)


def test_sequencer_writes_nothing_else():
    """Rows past M and words outside the destination stay untouched."""
    cfg = SMALL
    case = gemm_case(cfg, m=5, k=6, n=3, b_trans=False, b_act=False, pad=1, saturate=False, seed=9)
    act = [0] * cfg.act_depth
    for mem, addr, words in case.preload:
        if mem == "act":
            act[addr:addr + len(words)] = words
    sentinel = 0x5A5A5A5A
    dst, stride = case.instr.dst_addr, case.instr.dst_stride
    for i in range(dst - 2, dst + (case.instr.m + 3) * stride):
        act[i] = sentinel
    wt = [0] * cfg.weight_depth
    for mem, addr, words in case.preload:
        if mem == "wt":
            wt[addr:addr + len(words)] = words
    dut = _Harness(cfg, act, wt, case.param_words)
    seen = {}

    async def tb(ctx):
        ctx.set(dut.instr, {name: value for name, value in case.instr.args})
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        await ctx.tick().until(~dut.busy)
        await ctx.tick()
        for i in range(dst - 2, dst + (case.instr.m + 3) * stride):
            seen[i] = int(ctx.get(dut.act.data[i]))

    simulate(dut, tb)
    written = {dst + r * stride for r in range(case.instr.m)}
    untouched = [i for i in seen if i not in written]
    assert all(seen[i] == sentinel for i in untouched), [i for i in untouched if seen[i] != sentinel]
    assert all(seen[i] != sentinel for i in written)


def test_sequencer_zero_size_finishes():
    cfg = SMALL
    case = gemm_case(cfg, m=3, k=3, n=3, b_trans=False, b_act=False, pad=0, saturate=False, seed=1)
    dut = _Harness(cfg, [0] * cfg.act_depth, [0] * cfg.weight_depth, case.param_words)
    busy = []

    async def tb(ctx):
        ctx.set(dut.instr, {"m": 0, "k": 3, "n": 3})
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(4):
            busy.append(ctx.get(dut.busy))
            await ctx.tick()

    simulate(dut, tb)
    assert busy == [0, 0, 0, 0]
