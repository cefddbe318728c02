"""cocotb bench of the residual adder (hw/residual.py) against quant.ops.residual_add.

params: ``config`` (HwConfig.to_json()), ``vectors``, ``seed``.
"""

from __future__ import annotations

import random

import cocotb
import torch
from cocotb.triggers import FallingEdge

from vitforge.hw.config import HwConfig
from vitforge.hw.gemm import word_layout
from vitforge.quant.fixed import REQUANT_MAX_SHIFT, REQUANT_MULT_BITS
from vitforge.quant.ops import residual_add
from vitforge.sim.benches.drivers import receive, reset, send
from vitforge.sim.benches.runner import bench_config
from vitforge.sim.scoreboard import assert_equal

MMAX = (1 << REQUANT_MULT_BITS) - 1


@cocotb.test()
async def residual_matches_quant(dut):
    params = bench_config()
    cfg = HwConfig.from_json(params["config"])
    gen = torch.Generator().manual_seed(params["seed"])
    word = word_layout(cfg)
    await reset(dut, ["input"])
    cases = [(127, 127, MMAX, MMAX, 0), (-128, -128, MMAX, MMAX, REQUANT_MAX_SHIFT), (-128, 127, 1, 1, 1)]
    cases = [(torch.full((4, cfg.lanes), a), torch.full((4, cfg.lanes), b), ma, mb, s) for a, b, ma, mb, s in cases]
    for _ in range(params["vectors"]):
        cases.append((torch.randint(-128, 128, (16, cfg.lanes), generator=gen),
                      torch.randint(-128, 128, (16, cfg.lanes), generator=gen),
                      int(torch.randint(0, MMAX + 1, (1,), generator=gen)),
                      int(torch.randint(0, MMAX + 1, (1,), generator=gen)),
                      int(torch.randint(0, 28, (1,), generator=gen))))
    rng = random.Random(params["seed"])
    for i, (a, b, ma, mb, s) in enumerate(cases):
        dut.mult_a.value, dut.mult_b.value, dut.shift.value = ma, mb, s
        await FallingEdge(dut.clk)
        words = [(word.const(a[r].tolist()).as_bits()) | (word.const(b[r].tolist()).as_bits() << cfg.word_bits)
                 for r in range(a.shape[0])]
        cocotb.start_soon(send(dut, "input", words))
        out = await receive(dut, "output", len(words), rng, p_stall=0.25)
        got = [[word.from_bits(w)[j] for j in range(cfg.lanes)] for w in out]
        assert_equal(got, residual_add(a, b, ma, mb, s), f"residual vector {i} (mult {ma}/{mb}, shift {s})")
