"""GELU, sigmoid, exp and softmax units vs quant.nonlinear (exact), in the Amaranth simulator.

Formats and sizes come from the demo HwConfig; every code of each elementwise unit's input
format is checked, with random stalls on both sides.
"""

from __future__ import annotations

import os
import random

import pytest
import torch

from vitforge.hw.config import get_preset
from vitforge.hw.nonlinear import ExpUnit, GeluUnit, SigmoidUnit, SoftmaxUnit
from vitforge.quant.fixed import FixedFormat
from vitforge.quant.nonlinear import int_exp, int_gelu, int_sigmoid, int_softmax
from vitforge.sim.amsim import recv, send, simulate
from vitforge.sim.scoreboard import describe_mismatch
from vitforge.tools import env_int

CFG = get_preset("demo")
NUM = CFG.numerics
#: Random rows per row-wise test (VITFORGE_DEEP=1 runs many more).
ROWS = env_int("VITFORGE_ROWS", 200 if os.environ.get("VITFORGE_DEEP") else 6)
D_FMT = FixedFormat(NUM.softmax_in.bits + 1, NUM.softmax_in.frac)


def _stream(unit, inputs: list[int], seed: int = 5) -> list[int]:
    got: list[int] = []

    async def producer(ctx):
        await send(ctx, unit.i, inputs, rng=random.Random(seed), p_idle=0.2)

    async def consumer(ctx):
        got.extend(await recv(ctx, unit.o, len(inputs), rng=random.Random(seed + 1), p_stall=0.3))

    simulate(unit, producer, consumer)
    return got


ELEMENTWISE = [
    ("gelu", lambda: GeluUnit(numerics=NUM), NUM.gelu_in.codes().tolist(),
     lambda x: int_gelu(x, NUM.gelu_in, NUM.gelu_out)),
    ("sigmoid", lambda: SigmoidUnit(numerics=NUM), NUM.sigmoid_in.codes().tolist(),
     lambda x: int_sigmoid(x, NUM.sigmoid_in, NUM.sigmoid_out)),
    ("exp", lambda: ExpUnit(in_fmt=D_FMT, out_fmt=NUM.exp_out), list(range(D_FMT.qmin, 1)),
     lambda x: int_exp(x, D_FMT, NUM.exp_out)),
]


@pytest.mark.parametrize("make,codes,ref", [e[1:] for e in ELEMENTWISE], ids=[e[0] for e in ELEMENTWISE])
def test_elementwise_unit_every_code(make, codes: list[int], ref) -> None:
    unit = make()
    got = _stream(unit, codes)
    want = ref(torch.tensor(codes, dtype=torch.int64)).tolist()
    assert (msg := describe_mismatch(got, want, "output")) is None, msg


def test_elementwise_latency_property() -> None:
    unit = GeluUnit(numerics=NUM)
    seen: list[int] = []

    async def tb(ctx):
        ctx.set(unit.o.ready, 1)
        ctx.set(unit.i.payload, 17)
        ctx.set(unit.i.valid, 1)
        await ctx.tick()
        ctx.set(unit.i.valid, 0)
        for cycle in range(1, 12):
            if ctx.get(unit.o.valid):
                seen.append(cycle)
            await ctx.tick()

    simulate(unit, tb)
    assert seen == [unit.latency]


def _softmax(unit: SoftmaxUnit, rows: list[list[int]], seed: int = 9) -> list[tuple[int, int, int]]:
    got: list = []

    async def producer(ctx):
        rng = random.Random(seed)
        for row in rows:
            ctx.set(unit.length, len(row))
            await send(ctx, unit.i, row, rng=rng, p_idle=0.2)

    async def consumer(ctx):
        got.extend(await recv(ctx, unit.o, sum(map(len, rows)), rng=random.Random(seed + 1), p_stall=0.3,
                              convert=lambda p: (p.data, p.first, p.last)))

    simulate(unit, producer, consumer)
    return got


def _check_rows(got, rows) -> None:
    want, markers = [], []
    for row in rows:
        want += int_softmax(torch.tensor(row), NUM.softmax_in, NUM.softmax_out, NUM.exp_out).tolist()
        markers += [(k == 0, k == len(row) - 1) for k in range(len(row))]
    assert (msg := describe_mismatch([g[0] for g in got], want, "probability")) is None, msg
    assert (msg := describe_mismatch([(bool(g[1]), bool(g[2])) for g in got], markers, "(first, last)")) is None, msg


def test_softmax_rows_random_and_corners() -> None:
    max_len = CFG.max_tokens
    unit = SoftmaxUnit(numerics=NUM, max_len=max_len)
    rng = random.Random(2024)
    lo, hi = NUM.softmax_in.qmin, NUM.softmax_in.qmax
    rows = [
        [rng.randint(lo, hi)],  # length 1: probability 1.0 saturates
        [hi] + [lo] * (max_len - 1),  # one dominant element: saturates, others round to 0
        [lo] * max_len,  # all equal at the minimum
        [hi, lo],
        [0] * 3,
    ]
    rows += [[rng.randint(lo, hi) for _ in range(rng.randint(1, max_len))] for _ in range(ROWS)]
    _check_rows(_softmax(unit, rows), rows)


def test_softmax_latency_property() -> None:
    unit = SoftmaxUnit(numerics=NUM, max_len=8)
    row = [3, -7, 12]
    seen: list[int] = []

    async def tb(ctx):
        ctx.set(unit.o.ready, 1)
        ctx.set(unit.length, len(row))
        for x in row:
            ctx.set(unit.i.payload, x)
            ctx.set(unit.i.valid, 1)
            await ctx.tick().until(unit.i.ready)
        ctx.set(unit.i.valid, 0)
        for cycle in range(1, 200):
            if ctx.get(unit.o.valid):
                seen.append(cycle)
                break
            await ctx.tick()

    simulate(unit, tb)
    assert seen == [unit.latency(len(row))]


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: SoftmaxUnit(numerics=NUM, max_len=0), r"max_len must be an integer >= 1, not 0"),
        (lambda: GeluUnit(numerics="demo"), r"numerics must be a NumericsConfig, not str"),
        (lambda: ExpUnit(in_fmt=D_FMT, out_fmt=FixedFormat(16, 15)), r"unsigned output"),
    ],
)
def test_units_reject_bad_parameters(make, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        make()
