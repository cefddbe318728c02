"""PolyUnit vs quant.poly.PiecewisePoly.evaluate: exact, every table, random back-pressure."""

from __future__ import annotations

import random

import pytest
import torch
from amaranth import unsigned

from vitforge.hw.poly_unit import PolyUnit
from vitforge.quant import poly_tables
from vitforge.quant.poly import PiecewisePoly
from vitforge.sim.amsim import recv, send, simulate
from vitforge.sim.scoreboard import describe_mismatch

TABLES = [(poly_tables.GELU_RESIDUAL, 4, 8), (poly_tables.SIGMOID_POS, 4, 8), (poly_tables.EXP2_NEG, 14, 14)]


def _simulate(unit: PolyUnit, inputs: list[int], seed: int) -> tuple[list[int], list[int]]:
    rng_in, rng_out = random.Random(seed), random.Random(seed + 1)
    got: list = []

    async def producer(ctx):
        await send(ctx, unit.i, ({"a": a, "tag": k} for k, a in enumerate(inputs)), rng=rng_in, p_idle=0.2)

    async def consumer(ctx):
        got.extend(await recv(ctx, unit.o, len(inputs), rng=rng_out, p_stall=0.3,
                              convert=lambda p: (p.y, p.tag)))

    simulate(unit, producer, consumer)
    return [y for y, _ in got], [t for _, t in got]


@pytest.mark.parametrize("poly,in_frac,in_width", TABLES, ids=[t[0].name for t in TABLES])
def test_poly_unit_matches_reference(poly: PiecewisePoly, in_frac: int, in_width: int) -> None:
    unit = PolyUnit(poly=poly, in_frac=in_frac, in_width=in_width, tag_shape=unsigned(16))
    rng = random.Random(1234)
    top = (1 << in_width) - 1
    # Segment boundaries, the domain edge, extremes, then random codes.
    domain = (1 << poly.seg_bits) << poly.seg_shift(in_frac)
    corners = [0, 1, top, min(domain - 1, top), min(domain, top)]
    corners += [min(s << poly.seg_shift(in_frac), top) for s in range(1 << poly.seg_bits)]
    inputs = corners + [rng.randrange(top + 1) for _ in range(200)]
    ys, tags = _simulate(unit, inputs, seed=7)
    want = poly.evaluate(torch.tensor(inputs, dtype=torch.int64), in_frac).tolist()
    assert (msg := describe_mismatch(ys, want, poly.name)) is None, msg
    assert tags == list(range(len(inputs))), "tags must come out in order with their values"


def test_poly_unit_latency_property() -> None:
    unit = PolyUnit(poly=poly_tables.GELU_RESIDUAL, in_frac=4, in_width=8)
    seen: list[int] = []

    async def tb(ctx):
        ctx.set(unit.o.ready, 1)
        ctx.set(unit.i.payload, {"a": 5, "tag": 0})
        ctx.set(unit.i.valid, 1)
        await ctx.tick()
        ctx.set(unit.i.valid, 0)
        for cycle in range(1, 10):
            if ctx.get(unit.o.valid):
                seen.append(cycle)
            await ctx.tick()

    simulate(unit, tb)
    assert seen == [unit.latency]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"in_frac": -1, "in_width": 8}, r"in_frac must be an integer >= 0, not -1"),
        ({"in_frac": 4, "in_width": 0}, "in_width must be an integer in 1..32, not 0"),
        ({"in_frac": 0, "in_width": 8}, "coarser than the 8 segments"),
    ],
)
def test_poly_unit_rejects_bad_parameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PolyUnit(poly=poly_tables.GELU_RESIDUAL, **kwargs)
