"""LayerNorm unit vs quant.nonlinear.int_layernorm (exact), in the Amaranth simulator."""

from __future__ import annotations

import os
import random

import pytest
import torch

from vitforge.hw.config import get_preset
from vitforge.hw.nonlinear import LN_BETA_BITS, LayerNormUnit
from vitforge.quant.fixed import REQUANT_MAX_SHIFT, REQUANT_MULT_BITS, FixedFormat, int_format
from vitforge.quant.nonlinear import int_layernorm
from vitforge.sim.amsim import recv, send, simulate
from vitforge.sim.scoreboard import describe_mismatch
from vitforge.tools import env_int

CFG = get_preset("demo")
NUM = CFG.numerics
#: Random rows (VITFORGE_DEEP=1 runs many more).
ROWS = env_int("VITFORGE_ROWS", 200 if os.environ.get("VITFORGE_DEEP") else 4)
FMT = int_format(NUM.act_bits)
GAMMA_FMT = int_format(NUM.weight_bits)
BETA_FMT = FixedFormat(LN_BETA_BITS, 0)


def _case(rng: random.Random, dim: int, kind: str = "random") -> dict:
    if kind == "saturate":  # extreme values, large gamma, a tiny shift: outputs clamp both ways
        x = [FMT.qmax if k % 2 else FMT.qmin for k in range(dim)]
        return {"x": x, "gamma": [GAMMA_FMT.qmax] * dim, "beta": [0] * dim, "mult": (1 << REQUANT_MULT_BITS) - 1,
                "shift": 8, "eps_q": 1}
    # "flat": one step of 1 in a constant row: the variance is tiny and eps_q dominates it.
    flat = kind == "flat"
    base = rng.randint(FMT.qmin, FMT.qmax - 1)
    x = [base] * (dim - 1) + [base + 1] if flat else [rng.randint(FMT.qmin, FMT.qmax) for _ in range(dim)]
    return {
        "x": x,
        "gamma": [rng.randint(GAMMA_FMT.qmin, GAMMA_FMT.qmax) for _ in range(dim)],
        "beta": [rng.randint(-(1 << 20), 1 << 20) for _ in range(dim)],
        "mult": rng.randint(1 << (REQUANT_MULT_BITS - 1), (1 << REQUANT_MULT_BITS) - 1),
        "shift": min(30 if flat else rng.randint(16, 26), REQUANT_MAX_SHIFT),
        "eps_q": 1000 if flat else rng.choice([0, 1, 1000]),
    }


def _reference(case: dict) -> list[int]:
    return int_layernorm(torch.tensor(case["x"]), torch.tensor(case["gamma"]), torch.tensor(case["beta"]),
                         case["mult"], case["shift"], FMT, eps_q=case["eps_q"]).tolist()


def _simulate(unit: LayerNormUnit, cases: list[dict], seed: int = 4) -> list[tuple[int, int, int]]:
    got: list = []
    rng = random.Random(seed)

    async def producer(ctx):
        for case in cases:
            for port in ("eps_q", "mult", "shift"):
                ctx.set(getattr(unit, port), case[port])
            ctx.set(unit.length, len(case["x"]))
            await send(ctx, unit.i, case["x"], rng=rng, p_idle=0.2)
            # The next row's scalars may change only after this row has left: wait for its last output.
            while len(got) < sum(len(c["x"]) for c in cases[: cases.index(case) + 1]):
                await ctx.tick()

    async def params(ctx):
        for case in cases:
            await send(ctx, unit.params, ({"gamma": g, "beta": b} for g, b in zip(case["gamma"], case["beta"],
                                                                                  strict=True)),
                       rng=rng, p_idle=0.2)

    async def consumer(ctx):
        # Appends as it goes: the producer watches the count.
        await recv(ctx, unit.o, sum(len(c["x"]) for c in cases), rng=random.Random(seed + 1), p_stall=0.3,
                   convert=lambda p: got.append((p.data, p.first, p.last)))

    simulate(unit, producer, params, consumer)
    return got


def test_layernorm_rows_random_and_corners() -> None:
    max_dim = CFG.max_embed_dim
    unit = LayerNormUnit(numerics=NUM, max_dim=max_dim)
    rng = random.Random(77)
    cases = [_case(rng, 1), _case(rng, max_dim, "saturate"), _case(rng, 5, "flat"), _case(rng, 2, "flat")]
    cases += [_case(rng, max_dim)]
    cases += [_case(rng, rng.randint(2, max_dim)) for _ in range(ROWS)]
    got = _simulate(unit, cases)
    want = [v for case in cases for v in _reference(case)]
    assert (msg := describe_mismatch([g[0] for g in got], want, "layernorm")) is None, msg
    markers = [(k == 0, k == len(c["x"]) - 1) for c in cases for k in range(len(c["x"]))]
    assert (msg := describe_mismatch([(bool(g[1]), bool(g[2])) for g in got], markers, "(first, last)")) is None, msg
    flat = cases[2]
    assert _reference(flat) != _reference({**flat, "eps_q": 0}), "the flat case must depend on eps_q"
    saturated = _reference(cases[1])
    assert FMT.qmax in saturated and FMT.qmin in saturated, "the saturation case must reach both limits"


def test_layernorm_latency_property() -> None:
    unit = LayerNormUnit(numerics=NUM, max_dim=8)
    row = [5, -3, 100, 7]
    seen: list[int] = []

    async def tb(ctx):
        ctx.set(unit.o.ready, 1)
        ctx.set(unit.params.valid, 1)
        ctx.set(unit.params.payload, {"gamma": 1, "beta": 0})
        ctx.set(unit.mult, 1)
        ctx.set(unit.length, len(row))
        for x in row:
            ctx.set(unit.i.payload, x)
            ctx.set(unit.i.valid, 1)
            await ctx.tick().until(unit.i.ready)
        ctx.set(unit.i.valid, 0)
        for cycle in range(1, 300):
            if ctx.get(unit.o.valid):
                seen.append(cycle)
                break
            await ctx.tick()

    simulate(unit, tb)
    assert seen == [unit.latency(len(row))]


def test_layernorm_rejects_bad_max_dim() -> None:
    with pytest.raises(ValueError, match=r"max_dim must be an integer >= 1, not 0"):
        LayerNormUnit(numerics=NUM, max_dim=0)
