"""Token selector control logic vs quant.selector (exact), in the Amaranth simulator.

Sizes come from the demo HwConfig (max_heads, max_tokens, max_embed_dim), with smaller images
drawn inside them; cases: random, all kept, all pruned but the class token, one token, zero weights.
"""

from __future__ import annotations

import random

import pytest
import torch

from vitforge.hw.config import get_preset
from vitforge.hw.selector import FuseScore, TokenCompactor, TokenMean, TokenSelector
from vitforge.quant.fixed import INT8
from vitforge.quant.selector import SCORE_FMT, WEIGHT_FMT, fuse_scores, keep_mask, select_tokens, token_mean
from vitforge.sim.amsim import recv, send, simulate
from vitforge.sim.scoreboard import describe_mismatch

CFG = get_preset("demo")


def _image(rng: random.Random, n: int, d: int, h: int, kind: str = "random") -> dict:
    scores = [[rng.randint(0, SCORE_FMT.qmax) for _ in range(h)] for _ in range(n)]
    weights = [[rng.randint(0, WEIGHT_FMT.qmax) for _ in range(h)] for _ in range(n)]
    if kind == "zero_weights":
        weights[rng.randrange(n)] = [0] * h
    threshold = rng.randint(0, SCORE_FMT.qmax)
    if kind == "keep_all":
        threshold = 0
    elif kind == "prune_all":
        threshold = SCORE_FMT.qmax
        scores = [[min(s, SCORE_FMT.qmax - 1) for s in row] for row in scores]
    x = [[rng.randint(INT8.qmin, INT8.qmax) for _ in range(d)] for _ in range(n)]
    if kind == "saturate":  # pruned tokens all at the extremes: the package token sits at the limits
        x = [[INT8.qmin if (k + j) % 2 else INT8.qmax for j in range(d)] for k in range(n)]
    return {"scores": scores, "weights": weights, "threshold": threshold, "x": x}


def _reference(img: dict) -> tuple[list[list[int]], list[int], list[int]]:
    tokens, keep, fused = select_tokens(torch.tensor(img["x"]), torch.tensor(img["scores"]),
                                       torch.tensor(img["weights"]), img["threshold"])
    return tokens.tolist(), keep.int().tolist(), fused.tolist()


def _score_items(img: dict):
    return ({"scores": s, "weights": w, "first": k == 0}
            for k, (s, w) in enumerate(zip(img["scores"], img["weights"], strict=True)))


def test_fuse_score_matches_reference() -> None:
    h = CFG.max_heads
    unit = FuseScore(heads=h)
    rng = random.Random(31)
    img = _image(rng, 40, 1, h, "zero_weights")
    got: list = []

    async def producer(ctx):
        ctx.set(unit.threshold, img["threshold"])
        await send(ctx, unit.i, _score_items(img), rng=rng, p_idle=0.2)

    async def consumer(ctx):
        got.extend(await recv(ctx, unit.o, len(img["scores"]), rng=random.Random(1), p_stall=0.3,
                              convert=lambda p: (p.fused, p.keep)))

    simulate(unit, producer, consumer)
    fused = fuse_scores(torch.tensor(img["scores"]), torch.tensor(img["weights"]))
    keep = keep_mask(fused, img["threshold"])
    assert (msg := describe_mismatch([f for f, _ in got], fused.tolist(), "fused")) is None, msg
    assert (msg := describe_mismatch([k for _, k in got], keep.int().tolist(), "keep")) is None, msg
    assert 0 in fused.tolist(), "the zero-weight token must fuse to 0"


def _beats(row: list[int], lanes: int) -> list:
    """A token row as the selector's transfers: codes at ``lanes = 1``, else lists of ``lanes`` codes
    (the last one padded with -1: lanes past the row are ignored)."""
    if lanes == 1:
        return list(row)
    padded = row + [-1] * (-len(row) % lanes)
    return [padded[i:i + lanes] for i in range(0, len(padded), lanes)]


def _select(unit: TokenSelector, images: list[dict], seed: int = 8, lanes: int = 1) -> list[tuple]:
    got: list = []
    rng = random.Random(seed)
    counts = [len(_reference(img)[0]) * len(_beats(img["x"][0], lanes)) for img in images]

    async def scores(ctx):
        for k, img in enumerate(images):
            ctx.set(unit.threshold, img["threshold"])
            ctx.set(unit.n_tokens, len(img["x"]))
            ctx.set(unit.dim, len(img["x"][0]))
            await send(ctx, unit.scores, _score_items(img), rng=rng, p_idle=0.2)
            while len(got) < sum(counts[: k + 1]):  # the next image's sizes wait for this one's end
                await ctx.tick()

    async def tokens(ctx):
        for img in images:
            await send(ctx, unit.tokens, (v for row in img["x"] for v in _beats(row, lanes)), rng=rng, p_idle=0.2)

    def convert(p):
        data = p.data if lanes == 1 else [p.data[j] for j in range(lanes)]
        got.append((data, p.first, p.last, p.package, p.end))

    async def consumer(ctx):
        await recv(ctx, unit.o, sum(counts), rng=random.Random(seed + 1), p_stall=0.3, convert=convert)

    simulate(unit, scores, tokens, consumer)
    return got


@pytest.mark.parametrize("lanes", [1, 4])
def test_token_selector_images(lanes: int) -> None:
    """Every image's tokens, flags and package token, bit for bit; at ``lanes = 4`` rows of 1..6 codes
    end mid-transfer (the output's lanes past the row are not compared)."""
    h, nmax, dmax = CFG.max_heads, CFG.max_tokens, CFG.max_embed_dim
    unit = TokenSelector(heads=h, max_tokens=nmax, max_dim=dmax, lanes=lanes)
    rng = random.Random(2026)
    images = [
        _image(rng, 6, 5, h, "keep_all"),
        _image(rng, 7, 3, h, "prune_all"),
        _image(rng, 1, 4, h),  # the class token alone
        _image(rng, 5, 1, h, "saturate"),
        _image(rng, 9, 6, h, "zero_weights"),
        _image(rng, nmax, 2, h),
        _image(rng, 3, dmax, h),
    ]
    got = _select(unit, images, lanes=lanes)
    want, flags = [], []
    for img in images:
        tokens, keep, _ = _reference(img)
        pruned = 0 in keep
        for r, row in enumerate(tokens):
            is_pkg = pruned and r == len(tokens) - 1
            beats = _beats(row, lanes)
            for j, v in enumerate(beats):
                want.append(v if lanes == 1 else v[:len(row) - j * lanes])
                flags.append((j == 0, j == len(beats) - 1, is_pkg, r == len(tokens) - 1 and j == len(beats) - 1))
    if lanes > 1:  # lanes past a row's end are unspecified
        got = [(g[0][:len(w)], *g[1:]) for g, w in zip(got, want, strict=True)]
    assert _reference(images[0])[1] == [1] * 6, "keep_all must keep every token"
    assert _reference(images[1])[1] == [1] + [0] * 6, "prune_all must keep only the class token"
    assert (msg := describe_mismatch([g[0] for g in got], want, "tokens")) is None, msg
    assert (msg := describe_mismatch([tuple(map(bool, g[1:])) for g in got], flags,
                                  "(first, last, package, end)")) is None, msg


def test_token_mean_rows() -> None:
    max_len = CFG.max_tokens
    unit = TokenMean(max_len=max_len)
    rng = random.Random(5)
    rows = [[INT8.qmax], [INT8.qmin] * max_len, [INT8.qmax] * max_len, [3, -4]]
    rows += [[rng.randint(INT8.qmin, INT8.qmax) for _ in range(rng.randint(1, max_len))] for _ in range(5)]
    got: list = []

    async def producer(ctx):
        for row in rows:
            ctx.set(unit.length, len(row))
            await send(ctx, unit.i, row, rng=rng, p_idle=0.2)

    async def consumer(ctx):
        got.extend(await recv(ctx, unit.o, len(rows), rng=random.Random(6), p_stall=0.3))

    simulate(unit, producer, consumer)
    want = [int(token_mean(torch.tensor(row), dim=0)) for row in rows]
    assert (msg := describe_mismatch(got, want, "mean")) is None, msg


def test_token_mean_latency_property() -> None:
    unit = TokenMean(max_len=4)
    seen: list[int] = []

    async def tb(ctx):
        ctx.set(unit.o.ready, 1)
        ctx.set(unit.length, 2)
        for x in (7, 9):
            ctx.set(unit.i.payload, x)
            ctx.set(unit.i.valid, 1)
            await ctx.tick().until(unit.i.ready)
        ctx.set(unit.i.valid, 0)
        for cycle in range(2, 60):
            if ctx.get(unit.o.valid):
                seen.append(cycle)
                assert ctx.get(unit.o.payload) == 8
                break
            await ctx.tick()

    simulate(unit, tb)
    assert seen == [unit.latency]


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: FuseScore(heads=0), r"heads must be an integer >= 1, not 0"),
        (lambda: TokenCompactor(max_tokens=4, max_dim=-2), r"max_dim must be an integer >= 1, not -2"),
        (lambda: TokenMean(max_len=1.5), r"max_len must be an integer >= 1, not 1.5"),
    ],
)
def test_selector_rejects_bad_parameters(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()
