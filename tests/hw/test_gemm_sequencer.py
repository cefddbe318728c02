"""GemmSequencer in the Amaranth simulator: GEMM instructions from scratchpads vs quant.ops.gemm.

The scratchpads are ``amaranth.lib.memory`` memories preloaded through their ``init``; results
are read back from the activation memory's data after ``busy`` falls. Cases cover M/N/K not
multiples of the array, row strides wider than the matrix, ``b_trans`` (Q K^T), ``b_act``
(attn x V), K = 1 and saturation; and the operand cache (``HwConfig.operand_cache_words``) of the
``b_act`` GEMMs: random shapes whose B or A fit its halves and do not, at the size boundaries,
without a cache, and instructions back to back (each fills the cache afresh).
"""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from vitforge.hw import timing
from vitforge.hw.config import BASE, HwConfig
from vitforge.hw.gemm import GemmSequencer
from vitforge.hw.isa import FIELDS, Instr, Op
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
#: Half as many rows as lanes, as on zcu102 (32 x 64).
WIDE = dataclasses.replace(SMALL, pe_rows=4, pe_cols=8)
#: An operand cache of 32 words (halves of four blocks of 4 words): small enough that some attention-like
#: B and A do not fit.
CACHE32 = dataclasses.replace(SMALL, operand_cache_words=32)
#: No operand cache: every b_act block reads A and B one after the other.
NO_CACHE = dataclasses.replace(SMALL, operand_cache_words=0)


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


def run_cases(cfg: HwConfig, cases: list[GemmCase]) -> list[tuple[torch.Tensor, int]]:
    """Run GEMM instructions one after the other on one sequencer (their operands preloaded together);
    returns, per instruction, the int8 result read from the act scratchpad and its cycles busy."""
    act = [0] * cfg.act_depth
    wt = [0] * cfg.weight_depth
    for case in cases:
        for mem, addr, words in case.preload:
            target = act if mem == "act" else wt
            target[addr:addr + len(words)] = words
    params, taken = [0] * cfg.param_depth, set()
    for case in cases:  # a case's parameter words (param_words[1:]) at its instruction's param_addr
        addrs = range(case.instr.param_addr, case.instr.param_addr + len(case.param_words) - 1)
        assert taken.isdisjoint(addrs), "the cases' parameter words overlap"
        taken.update(addrs)
        params[addrs.start:addrs.stop] = case.param_words[1:]
    dut = _Harness(cfg, act, wt, params)
    results = []

    async def tb(ctx):
        for case in cases:
            instr = case.instr
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
            words = [int(ctx.get(dut.act.data[instr.dst_addr + i])) for i in range(instr.m * instr.dst_stride)]
            results.append((words, cycles))

    simulate(dut, tb, name="gemm_sequencer")
    return [(unpack_matrix(cfg, words, case.instr.m, case.instr.n, case.instr.dst_stride), cycles)
            for case, (words, cycles) in zip(cases, results, strict=True)]


def run_case(cfg: HwConfig, case: GemmCase) -> tuple[torch.Tensor, int]:
    """Run one GEMM instruction; returns (the int8 result read from the act scratchpad, cycles busy)."""
    return run_cases(cfg, [case])[0]


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


def _random_attention_shapes(count: int, seed: int) -> list[tuple[int, int, int, bool, int]]:
    """``(m, k, n, b_trans, pad)`` of ``b_act`` GEMMs: 1..13 rows, K and N of 1..20 (B of 1 to 25
    blocks, A of 1 to 5 words a row: some fit CACHE32's halves, some do not), strides up to 2 words wider."""
    rng = random.Random(seed)
    return [(rng.randint(1, 13), rng.randint(1, 20), rng.randint(1, 20), rng.random() < 0.5, rng.randint(0, 2))
            for _ in range(count)]


#: The halves' boundary on CACHE32 (16 words each): B of 16 words (2 x 2 blocks) fits, one block more
#: does not; an M tile's A of 16 words (K = 16) fits, of 20 (K = 17) does not.
CACHE_EDGE_SHAPES = [(9, 8, 8, True, 0), (9, 8, 8, False, 1), (9, 8, 9, True, 0), (9, 9, 8, False, 0),
                     (9, 16, 9, False, 0), (9, 17, 9, True, 1), (5, 16, 4, False, 0), (5, 4, 17, True, 1)]
CACHE_SHAPES = CACHE_EDGE_SHAPES + _random_attention_shapes(10, seed=13)


def _tiles(cfg: HwConfig, m: int, n: int) -> list[tuple[int, int]]:
    return [(mt, nt) for mt in range(-(-m // cfg.pe_rows)) for nt in range(cfg.row_words(n))]


@pytest.mark.parametrize("cfg", [CACHE32, SMALL, ODD, TALL, WIDE, NO_CACHE],
                         ids=["4x4-c32", "4x4-c1024", "3x4-c1024", "8x4-c1024", "4x8-c1024", "4x4-none"])
@pytest.mark.parametrize("m,k,n,b_trans,pad", CACHE_SHAPES, ids=[f"{m}x{k}x{n}{'t' if t else ''}p{p}"
                                                                 for m, k, n, t, p in CACHE_SHAPES])
def test_operand_cache_is_bit_exact_and_timed(cfg, m, k, n, b_trans, pad):
    """``b_act`` GEMMs with B or A from the operand cache (or neither, when they do not fit): bit-exact,
    and the cycle model exact for every schedule."""
    case = gemm_case(cfg, m=m, k=k, n=n, b_trans=b_trans, b_act=True, pad=pad, saturate=False,
                     seed=m * 400 + k * 20 + n)
    got, cycles = run_case(cfg, case)
    assert_equal(got, gemm(case.a, case.b, case.bias, case.mult, case.shift),
                 f"b_act GEMM m={m} k={k} n={n} b_trans={b_trans} pad={pad} cache={cfg.operand_cache_words}")
    assert cycles == timing.gemm_busy_cycles(cfg, m, k, n, b_act=True)


def test_operand_cache_shapes_cover_every_schedule():
    """The shapes above read B from CACHE32, A from it, and neither, in tiles after the first."""
    used = {timing.cached_operand(CACHE32, k, n, mt, nt)
            for m, k, n, _, _ in CACHE_SHAPES for mt, nt in _tiles(CACHE32, m, n) if (mt, nt) != (0, 0)}
    assert used == {"a", "b", None}
    assert not any(timing.cached_operand(NO_CACHE, k, n, mt, nt)
                   for m, k, n, _, _ in CACHE_SHAPES for mt, nt in _tiles(NO_CACHE, m, n))


@pytest.mark.parametrize("m,k,n,b_trans", [(9, 8, 8, True), (13, 9, 4, False), (9, 8, 9, True), (9, 20, 20, False)])
def test_operand_cache_saves_read_cycles(m, k, n, b_trans):
    """Measured on the RTL: a cache that holds both halves saves cycles against none; a cache that
    holds neither operand takes the cycles of none."""
    case = gemm_case(SMALL, m=m, k=k, n=n, b_trans=b_trans, b_act=True, pad=0, saturate=False, seed=7)
    (_, none), (_, c32), (_, c1024) = (run_case(cfg, case) for cfg in (NO_CACHE, CACHE32, SMALL))
    assert c1024 < none
    if not any(timing.cached_operand(CACHE32, k, n, mt, nt) for mt, nt in _tiles(CACHE32, m, n)):
        assert c32 == none
    else:
        assert c32 < none


def test_operand_cache_refilled_by_each_instruction():
    """``b_act`` GEMMs back to back: B from the cache (two different B, the second with fewer blocks),
    then A from it (a B that does not fit), then neither: each reads its own operands, none a word an
    instruction before left in the cache."""
    cfg = CACHE32
    shapes = [(9, 8, 8, True, 0), (9, 4, 7, False, 1), (6, 9, 9, True, 0), (9, 17, 9, False, 0)]
    cases, base = [], 8
    for i, (m, k, n, b_trans, pad) in enumerate(shapes):
        case = gemm_case(cfg, m=m, k=k, n=n, b_trans=b_trans, b_act=True, pad=pad, saturate=False, seed=21 + i,
                         base=base)
        base = case.instr.dst_addr + case.instr.m * case.instr.dst_stride + 4
        args = {**dict(case.instr.args), "param_addr": 1 + 3 * i}  # each case's parameters of their own
        cases.append(dataclasses.replace(case, instr=Instr(Op.GEMM, **args)))
    assert [{timing.cached_operand(cfg, k, n, mt, nt) for mt, nt in _tiles(cfg, m, n)} for m, k, n, _, _ in shapes] \
        == [{None, "a", "b"}, {None, "a", "b"}, {None, "a"}, {None}]
    for i, (case, (out, cycles)) in enumerate(zip(cases, run_cases(cfg, cases), strict=True)):
        ins = case.instr
        assert_equal(out, gemm(case.a, case.b, case.bias, case.mult, case.shift), f"instruction {i}")
        assert cycles == timing.gemm_busy_cycles(cfg, ins.m, ins.k, ins.n, b_act=True)
