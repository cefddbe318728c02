# amaranth: UnusedElaboratable=no
# (refused components are created and never elaborated; Amaranth would warn about them at exit)
"""GEMM engine in the Amaranth simulator (fast tier): requantizer and PE array vs quant/."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from vitforge.hw.config import BASE
from vitforge.hw.gemm import GemmEngine, Requantizer
from vitforge.quant.fixed import REQUANT_MAX_SHIFT, REQUANT_MULT_BITS, requantize
from vitforge.quant.ops import gemm
from vitforge.sim.amsim import get, put, simulate
from vitforge.sim.scoreboard import assert_equal
from vitforge.tools import env_int

MMAX = (1 << REQUANT_MULT_BITS) - 1
I32 = (-(1 << 31), (1 << 31) - 1)


def _requant_cases(rng: random.Random, lanes: int, n: int):
    """Rows of (acc, mult, shift): corners first, then random."""
    corners = [
        ([I32[0]] * lanes, [MMAX] * lanes, [0] * lanes),  # saturate low
        ([I32[1]] * lanes, [MMAX] * lanes, [REQUANT_MAX_SHIFT] * lanes),  # largest shift
        ([-3, -2, -1, 1][:lanes] * (lanes // 4 or 1), [1] * lanes, [1] * lanes),  # ties: -1.5 -> -1, 0.5 -> 1
        ([255, 256, -257, -256][:lanes] * (lanes // 4 or 1), [1] * lanes, [1] * lanes),  # saturation edges
        ([0] * lanes, [0] * lanes, [5] * lanes),
    ]
    rows = [tuple(c[:lanes] for c in row) for row in corners]
    for _ in range(n):
        rows.append(([rng.randint(*I32) for _ in range(lanes)], [rng.randint(0, MMAX) for _ in range(lanes)],
                     [rng.randint(0, REQUANT_MAX_SHIFT) for _ in range(lanes)]))
    return rows


def test_requantizer_matches_quant():
    lanes = 4
    dut = Requantizer(lanes=lanes, acc_bits=32, mult_bits=REQUANT_MULT_BITS, shift_bits=6)
    cases = _requant_cases(random.Random(1), lanes, env_int("VITFORGE_SAMPLES", 200))
    got = []

    async def producer(ctx):
        for i, (acc, mult, shift) in enumerate(cases):
            await put(ctx, dut.input, {"acc": acc, "mult": mult, "shift": shift, "last": i == len(cases) - 1})

    async def consumer(ctx):
        for _ in cases:
            payload = await get(ctx, dut.output)
            got.append([payload.data[j] for j in range(lanes)])

    simulate(dut, producer, consumer, name="requantizer")
    for i, (acc, mult, shift) in enumerate(cases):
        ref = requantize(torch.tensor(acc), torch.tensor(mult), torch.tensor(shift))
        assert_equal(got[i], ref, f"requantizer row {i} acc={acc} mult={mult} shift={shift}")


def test_requantizer_latency_and_bad_params():
    dut = Requantizer(lanes=1, acc_bits=32, mult_bits=16, shift_bits=6)
    seen = []

    async def tb(ctx):
        ctx.set(dut.output.ready, 1)
        ctx.set(dut.input.payload, {"acc": [100], "mult": [1], "shift": [0], "last": 1})
        ctx.set(dut.input.valid, 1)
        await ctx.tick()
        ctx.set(dut.input.valid, 0)
        for cycle in range(1, 6):
            if ctx.get(dut.output.valid):
                seen.append(cycle)
            await ctx.tick()

    simulate(dut, tb)
    assert seen[0] == Requantizer.latency
    with pytest.raises(ValueError, match="lanes must be a positive integer, not 0"):
        Requantizer(lanes=0, acc_bits=32, mult_bits=16, shift_bits=6)
    with pytest.raises(ValueError, match="shift_bits 5 cannot hold REQUANT_MAX_SHIFT=47"):
        Requantizer(lanes=1, acc_bits=32, mult_bits=16, shift_bits=5)


def _random_tile(gen: torch.Generator, rows: int, cols: int, k: int, extreme: bool):
    if extreme:
        a = torch.full((rows, k), -128, dtype=torch.int64)
        w = torch.full((k, cols), -128, dtype=torch.int64)
        w[:, ::2] = 127
    else:
        a = torch.randint(-128, 128, (rows, k), generator=gen)
        w = torch.randint(-128, 128, (k, cols), generator=gen)
    bias = torch.randint(-(1 << 20), 1 << 20, (cols,), generator=gen)
    mult = torch.randint(0, MMAX + 1, (cols,), generator=gen)
    shift = torch.randint(0, REQUANT_MAX_SHIFT + 1, (cols,), generator=gen)
    return a, w, bias, mult, shift


@pytest.mark.parametrize(("shape", "packing"), [((4, 4), False), ((2, 3), False), ((4, 4), True), ((3, 2), True)])
def test_engine_tiles_match_quant_gemm(shape, packing):
    """Plain, and with two rows per multiplication (``dsp_packing``; 3 rows: one pair and one row alone)."""
    rows, cols = shape
    cfg = dataclasses.replace(BASE, pe_rows=rows, pe_cols=cols, max_embed_dim=12 * cols, max_heads=1,
                              max_mlp_dim=12 * cols, max_tokens=8, act_depth=8192, dsp_packing=packing)
    gen = torch.Generator().manual_seed(2)
    ks = [1, 1, 2, 7, 3, 16, 1, 5]
    tiles = [_random_tile(gen, rows, cols, k, extreme=(i == 5)) for i, k in enumerate(ks)]
    got = _run_tiles(cfg, tiles)
    for i, (a, w, bias, mult, shift) in enumerate(tiles):
        assert_equal(got[i], gemm(a, w, bias, mult, shift), f"tile {i} (K={a.shape[1]})")


def _run_tiles(cfg, tiles) -> torch.Tensor:
    """The engine's ``(tiles, pe_rows, pe_cols)`` int8 results for ``(a, w, bias, mult, shift)`` tiles."""
    rows, cols = cfg.pe_rows, cfg.pe_cols
    dut = GemmEngine(config=cfg)
    out = []

    async def feed(ctx):
        for a, w, *_ in tiles:
            k = a.shape[1]
            for s in range(k):
                await put(ctx, dut.operands, {"a": a[:, s].tolist(), "b": w[s].tolist(), "last": s == k - 1})

    async def params(ctx):
        for _, _, bias, mult, shift in tiles:
            await put(ctx, dut.params, [{"bias": int(b), "mult": int(m), "shift": int(s)}
                                        for b, m, s in zip(bias, mult, shift, strict=True)])

    async def drain(ctx):
        for _ in tiles:
            for r in range(rows):
                payload = await get(ctx, dut.result)
                assert payload.last == (r == rows - 1)
                out.append([payload.data[j] for j in range(cols)])

    simulate(dut, feed, params, drain, name="gemm_engine")
    return torch.tensor(out).reshape(len(tiles), rows, cols)


@pytest.mark.parametrize("packing", [False, True])
def test_engine_worst_case_sums_fit_the_accumulators(packing):
    """K = max_gemm_k steps of the largest and the most negative products: the narrowed accumulators
    (pe_acc_bits) hold both sums exactly; a shift brings them into int8, so a wrap would show."""
    rows, cols = 3, 2
    cfg = dataclasses.replace(BASE, pe_rows=rows, pe_cols=cols, max_embed_dim=8, max_heads=1, max_mlp_dim=40,
                              max_tokens=8, act_depth=1024, dsp_packing=packing)
    k = cfg.max_gemm_k
    assert k == 40 and cfg.pe_acc_bits < cfg.acc_bits
    a = torch.full((rows, k), -128, dtype=torch.int64)
    w = torch.tensor([[-128, 127]] * k)  # column 0: +2**14 per step, column 1: -128 * 127
    a[rows - 1] = 127  # the last row: -128 * 127 and 127 * 127
    shift = torch.full((cols,), cfg.pe_acc_bits - 8)
    tile = (a, w, torch.zeros(cols, dtype=torch.int64), torch.ones(cols, dtype=torch.int64), shift)
    got = _run_tiles(cfg, [tile])
    sums = a @ w
    assert int(sums.max()) == k * (1 << 14) < 1 << (cfg.pe_acc_bits - 1)
    assert int(sums.max()) >= 1 << (cfg.pe_acc_bits - 2)  # one bit fewer would not hold it
    assert_equal(got[0], gemm(*tile), "worst-case tile")


def test_engine_latency_property():
    cfg = BASE
    dut = GemmEngine(config=cfg)
    rows, cols = cfg.pe_rows, cfg.pe_cols
    seen = []

    async def tb(ctx):
        ctx.set(dut.result.ready, 1)
        ctx.set(dut.params.valid, 1)
        ctx.set(dut.params.payload, [{"bias": 0, "mult": 1, "shift": 0}] * cols)
        ctx.set(dut.operands.payload, {"a": [1] * rows, "b": [2] * cols, "last": 1})
        ctx.set(dut.operands.valid, 1)
        await ctx.tick()
        ctx.set(dut.operands.valid, 0)
        for cycle in range(1, 10):
            if ctx.get(dut.result.valid):
                seen.append((cycle, [ctx.get(dut.result.payload.data[j]) for j in range(cols)]))
            await ctx.tick()

    simulate(dut, tb)
    assert seen[0][0] == dut.latency
    assert len(seen) == rows and all(v == [2] * cols for _, v in seen)


def test_engine_refuses_bad_config():
    with pytest.raises(TypeError, match="config must be a HwConfig, not dict"):
        GemmEngine(config={})
