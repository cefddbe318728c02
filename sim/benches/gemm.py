"""cocotb bench of the GEMM engine (hw/gemm.py GemmEngine) against quant.ops.gemm.

Run through :func:`vitforge.sim.benches.runner.run_bench`; params: ``config`` (HwConfig.to_json()),
``tiles`` (random tiles), ``seed``. Sizes come from the config; ports are packed with the
design's own layouts (hw/gemm.py). The consumer throttles ``result.ready`` at random.
"""

from __future__ import annotations

import random

import cocotb
import torch

from vitforge.hw.config import HwConfig
from vitforge.hw.gemm import operand_layout, param_word_layout, result_layout
from vitforge.quant.fixed import REQUANT_MAX_SHIFT, REQUANT_MULT_BITS
from vitforge.quant.ops import gemm
from vitforge.sim.benches.drivers import receive, reset, send
from vitforge.sim.benches.runner import bench_config
from vitforge.sim.scoreboard import assert_equal

MMAX = (1 << REQUANT_MULT_BITS) - 1


def make_tiles(cfg: HwConfig, count: int, seed: int):
    """Corner tiles first (K=1, extreme operands and params, saturation), then random ones."""
    rows, cols = cfg.pe_rows, cfg.pe_cols
    gen = torch.Generator().manual_seed(seed)
    tiles = []
    ext_a = torch.full((rows, 33), -128, dtype=torch.int64)
    ext_w = torch.full((33, cols), -128, dtype=torch.int64)
    ext_w[:, ::2] = 127
    tiles.append((ext_a, ext_w, torch.zeros(cols, dtype=torch.int64), torch.full((cols,), MMAX), torch.zeros(cols)))
    tiles.append((ext_a, ext_w, torch.zeros(cols, dtype=torch.int64), torch.full((cols,), MMAX),
                  torch.full((cols,), REQUANT_MAX_SHIFT)))
    for i in range(count):
        k = 1 if i % 3 == 0 else int(torch.randint(1, 3 * cols, (1,), generator=gen))
        a = torch.randint(-128, 128, (rows, k), generator=gen)
        w = torch.randint(-128, 128, (k, cols), generator=gen)
        bias = torch.randint(-(1 << 24), 1 << 24, (cols,), generator=gen)
        mult = torch.randint(0, MMAX + 1, (cols,), generator=gen)
        shift = torch.randint(0, 24, (cols,), generator=gen)
        tiles.append((a, w, bias, mult, shift))
    return tiles


@cocotb.test()
async def gemm_tiles_match_quant(dut):
    params = bench_config()
    cfg = HwConfig.from_json(params["config"])
    rows, cols = cfg.pe_rows, cfg.pe_cols
    tiles = make_tiles(cfg, params["tiles"], params["seed"])
    ops_l, prm_l, res_l = operand_layout(cfg), param_word_layout(cfg), result_layout(cfg)
    op_words, prm_words = [], []
    for a, w, bias, mult, shift in tiles:
        k = a.shape[1]
        op_words += [ops_l.const({"a": a[:, s].tolist(), "b": w[s].tolist(), "last": s == k - 1}).as_bits()
                     for s in range(k)]
        prm_words.append(prm_l.const([{"bias": int(b), "mult": int(m), "shift": int(s)}
                                      for b, m, s in zip(bias, mult, shift, strict=True)]).as_bits())
    await reset(dut, ["operands", "params"])
    cocotb.start_soon(send(dut, "operands", op_words))
    cocotb.start_soon(send(dut, "params", prm_words))
    out = await receive(dut, "result", rows * len(tiles), random.Random(params["seed"]), p_stall=0.25)
    for t, (a, w, bias, mult, shift) in enumerate(tiles):
        got = []
        for r in range(rows):
            row = res_l.from_bits(out[t * rows + r])
            assert row.last == (r == rows - 1), f"tile {t} row {r}: last flag {row.last}"
            got.append([row.data[j] for j in range(cols)])
        assert_equal(got, gemm(a, w, bias, mult, shift), f"GEMM tile {t} (K={a.shape[1]})", shape=(rows, cols))
    dut._log.info("%d tiles bit-exact", len(tiles))
