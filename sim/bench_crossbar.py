"""cocotb bench of the crossbar tile (hw/crossbar/tile.py) against quant.crossbar.mvm.

Run through :func:`vitforge.sim.runner.run_bench`; params: ``config``
(:meth:`CrossbarConfig.to_dict`), ``vectors`` (random input vectors per run), ``seed``, and
``noise``: a list of ``[seed, sigma_lsb]`` runs (sigma 0: noise off). Each run reseeds the lanes,
streams the same weights and fresh vectors, and compares every output with ``mvm`` exactly; a
lossless config's noise-free outputs are also compared with ``x @ w``. The consumer throttles
``output.ready`` at random (bench_gemm's driver and monitor).
"""

from __future__ import annotations

import random

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge

from vitforge.hw.crossbar import input_layout, output_layout, weight_row_layout
from vitforge.quant.crossbar import CrossbarConfig, NoiseGenerator, mvm
from vitforge.sim.bench_gemm import receive, reset, send
from vitforge.sim.runner import assert_equal, bench_config


def tile_operands(cfg: CrossbarConfig, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``w (rows, cols)`` and ``x (n, rows)`` in -127..127: corners (full scale, zero, sparse), then random."""
    w = rng.integers(-127, 128, size=(cfg.rows, cfg.cols))
    w[0] = 127
    w[1] = -127
    w[:, -1] *= rng.random(cfg.rows) < 0.1  # a nearly empty column
    x = rng.integers(-127, 128, size=(max(n, 4), cfg.rows))
    x[0], x[1], x[2] = 127, -127, 0
    x[3] *= rng.random(cfg.rows) < 0.2
    return w, x


async def reseed(dut, seed: int, sigma_code: int) -> None:
    """Set the noise seed and sigma, strobe ``reseed`` for one cycle."""
    await FallingEdge(dut.clk)
    dut.noise_seed.value = seed
    dut.noise_sigma.value = sigma_code
    dut.reseed.value = 1
    await FallingEdge(dut.clk)
    dut.reseed.value = 0


@cocotb.test()
async def tile_matches_quant(dut):
    params = bench_config()
    cfg = CrossbarConfig.from_dict(params["config"])
    rng = np.random.default_rng(params["seed"])
    pace = random.Random(params["seed"])
    win, wrow, wout = input_layout(cfg), weight_row_layout(cfg), output_layout(cfg)
    await reset(dut, ("weights__valid", "input__valid", "output__ready", "reseed"))
    for run, (seed, sigma) in enumerate(params["noise"]):
        noise = NoiseGenerator(seed=seed, sigma_lsb=sigma) if sigma else None
        w, x = tile_operands(cfg, params["vectors"], rng)
        await reseed(dut, seed, noise.sigma_code if noise else 0)
        await send(dut, "weights", [wrow.const([int(v) for v in row]).as_bits() for row in w])
        words = [win.const([int(v) for v in row]).as_bits() for row in x]
        cocotb.start_soon(send(dut, "input", words))
        out = await receive(dut, "output", len(words), pace)
        got = [[int(wout.from_bits(word)[c]) for c in range(cfg.cols)] for word in out]
        want = mvm(x, w, cfg, noise=noise)
        assert_equal(got, want, f"run {run} (seed {seed}, sigma {sigma})", shape=want.shape)
        if noise is None and cfg.is_lossless:
            assert_equal(got, x @ w, f"run {run}: lossless tile vs x @ w", shape=want.shape)
        if noise is not None:
            assert not np.array_equal(want, mvm(x, w, cfg)), "noise changed nothing: a vacuous run"
