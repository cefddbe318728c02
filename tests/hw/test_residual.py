# amaranth: UnusedElaboratable=no
# (refused components are created and never elaborated; Amaranth would warn about them at exit)
"""Residual adder in the Amaranth simulator vs quant.ops.residual_add."""

from __future__ import annotations

import pytest
import torch

from vitforge.hw.config import BASE
from vitforge.hw.residual import ResidualAdder
from vitforge.quant.fixed import REQUANT_MAX_SHIFT, REQUANT_MULT_BITS
from vitforge.quant.ops import residual_add
from vitforge.sim.amsim import get, put, simulate
from vitforge.sim.scoreboard import assert_equal
from vitforge.tools import env_int

MMAX = (1 << REQUANT_MULT_BITS) - 1


def residual_cases(lanes: int, n: int, seed: int):
    """(a, b, mult_a, mult_b, shift) vectors: corners, then random."""
    gen = torch.Generator().manual_seed(seed)
    full = lambda v: torch.full((8, lanes), v, dtype=torch.int64)  # noqa: E731
    cases = [
        (full(127), full(127), MMAX, MMAX, 0),  # saturate high
        (full(-128), full(-128), MMAX, MMAX, REQUANT_MAX_SHIFT),  # largest shift
        (full(-128), full(127), 1, 1, 1),  # tie -0.5 -> 0
        (full(-3), full(0), 1, 0, 1),  # tie -1.5 -> -1
        (full(5), full(-7), 0, 0, 3),
    ]
    for _ in range(n):
        a = torch.randint(-128, 128, (8, lanes), generator=gen)
        b = torch.randint(-128, 128, (8, lanes), generator=gen)
        ma, mb = (int(x) for x in torch.randint(0, MMAX + 1, (2,), generator=gen))
        cases.append((a, b, ma, mb, int(torch.randint(0, 30, (1,), generator=gen))))
    return cases


def test_residual_matches_quant():
    cfg = BASE
    dut = ResidualAdder(config=cfg)
    cases = residual_cases(cfg.lanes, env_int("VITFORGE_SAMPLES", 40), seed=4)
    got = []

    async def tb(ctx):
        for a, b, ma, mb, s in cases:
            ctx.set(dut.mult_a, ma)
            ctx.set(dut.mult_b, mb)
            ctx.set(dut.shift, s)
            rows = []
            for r in range(a.shape[0]):
                await put(ctx, dut.input, {"a": a[r].tolist(), "b": b[r].tolist()})
                payload = await get(ctx, dut.output)
                rows.append([payload[j] for j in range(cfg.lanes)])
            got.append(rows)

    simulate(dut, tb, name="residual")
    for i, (a, b, ma, mb, s) in enumerate(cases):
        assert_equal(got[i], residual_add(a, b, ma, mb, s), f"residual case {i} (mult {ma}/{mb}, shift {s})")


def test_residual_refuses_bad_config():
    with pytest.raises(TypeError, match="config must be a HwConfig, not int"):
        ResidualAdder(config=3)
    assert ResidualAdder.latency == 1
