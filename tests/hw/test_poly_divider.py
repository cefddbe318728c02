"""Divider and Isqrt vs Python integer arithmetic (exact), corner cases and hypothesis."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vitforge.hw.divider import Divider, Isqrt
from vitforge.quant.nonlinear import isqrt
from vitforge.sim.amsim import recv, send, simulate
from vitforge.sim.scoreboard import describe_mismatch


def _divide(unit: Divider, pairs: list[tuple[int, int]]) -> list[int]:
    got: list[int] = []

    async def producer(ctx):
        await send(ctx, unit.i, ({"dividend": a, "divisor": b} for a, b in pairs))

    async def consumer(ctx):
        got.extend(await recv(ctx, unit.o, len(pairs), rng=random.Random(3), p_stall=0.3,
                              convert=lambda p: p.quotient))

    simulate(unit, producer, consumer)
    return got


def _sqrt(unit: Isqrt, values: list[int]) -> list[int]:
    got: list[int] = []

    async def producer(ctx):
        await send(ctx, unit.i, values)

    async def consumer(ctx):
        got.extend(await recv(ctx, unit.o, len(values)))

    simulate(unit, producer, consumer)
    return got


def test_divider_reciprocal_exact() -> None:
    unit = Divider(dividend_width=41, divisor_width=24)
    rng = random.Random(11)
    dens = [1, 2, 3, (1 << 24) - 1, 32767, 32768] + [rng.randrange(1, 1 << 24) for _ in range(20)]
    got = _divide(unit, [(1 << 40, d) for d in dens])
    assert (msg := describe_mismatch(got, [(1 << 40) // d for d in dens], "quotient")) is None, msg


def test_divider_short_quotient_and_saturation() -> None:
    unit = Divider(dividend_width=12, divisor_width=6, quotient_width=4)
    pairs = [(100, 7), (15, 1), (0, 5), (16, 1), (4095, 1), (5, 0)]
    want = [14, 15, 0, 15, 15, 15]  # quotients >= 16 and divide-by-zero saturate to 2**4 - 1
    assert (msg := describe_mismatch(_divide(unit, pairs), want, "quotient")) is None, msg


def test_divider_latency_property() -> None:
    unit = Divider(dividend_width=10, divisor_width=4, quotient_width=6)
    seen: list[int] = []

    async def tb(ctx):
        ctx.set(unit.i.payload, {"dividend": 100, "divisor": 3})
        ctx.set(unit.i.valid, 1)
        await ctx.tick()
        ctx.set(unit.i.valid, 0)
        for cycle in range(1, 20):
            if ctx.get(unit.o.valid) and not seen:
                seen.append(cycle)
                assert ctx.get(unit.o.payload.quotient) == 33
            await ctx.tick()

    simulate(unit, tb)
    assert seen == [unit.latency]


@settings(deadline=None)  # example count from the suite profile (ci: 60, VITFORGE_DEEP: 2000)
@given(st.lists(st.tuples(st.integers(0, (1 << 20) - 1), st.integers(1, (1 << 8) - 1)), min_size=1, max_size=8))
def test_divider_hypothesis(pairs: list[tuple[int, int]]) -> None:
    got = _divide(Divider(dividend_width=20, divisor_width=8), pairs)
    assert (msg := describe_mismatch(got, [a // b for a, b in pairs], "quotient")) is None, msg


@pytest.mark.parametrize("width", [1, 7, 46])
def test_isqrt_exact(width: int) -> None:
    rng = random.Random(width)
    top = (1 << width) - 1
    values = sorted({0, 1, top, min(3, top), min(4, top)}) + [rng.randrange(top + 1) for _ in range(20)]
    values += [min(k * k + d, top) for k in (2, 1000, 1 << 20) for d in (-1, 0) if 0 <= k * k + d <= top]
    want = isqrt(torch.tensor(values, dtype=torch.int64)).tolist()
    got = _sqrt(Isqrt(width=width), values)
    assert (msg := describe_mismatch(got, want, "isqrt")) is None, msg


def test_divider_rejects_bad_widths() -> None:
    with pytest.raises(ValueError, match=r"quotient_width must be an integer in 1\.\.8, not 9"):
        Divider(dividend_width=8, divisor_width=4, quotient_width=9)
