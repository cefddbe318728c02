# amaranth: UnusedElaboratable=no
# (refused components are created and never elaborated; Amaranth would warn about them at exit)
"""The crossbar tile in the Amaranth simulator vs quant.crossbar.mvm (noise on and off), its timing."""

from __future__ import annotations

import numpy as np
import pytest

from vitforge.hw.crossbar import CrossbarTile
from vitforge.quant.crossbar import CrossbarConfig, NoiseGenerator, mvm
from vitforge.sim.amsim import simulate
from vitforge.sim.scoreboard import assert_equal
from vitforge.tools import env_int


def run_tile(dut: CrossbarTile, w: np.ndarray, xs: np.ndarray, noise: NoiseGenerator | None,
             ready_every: int = 1) -> dict:
    """Load ``w``, reseed, stream ``xs``; returns outputs and measured latency/interval/load cycles."""
    cfg = dut.config
    out: dict = {"y": [], "latency": [], "accept": []}

    async def tb(ctx):
        cycle = 0
        if noise is not None:
            ctx.set(dut.noise_seed, noise.seed)
            ctx.set(dut.noise_sigma, noise.sigma_code)
            ctx.set(dut.reseed, 1)
            await ctx.tick()
            ctx.set(dut.reseed, 0)
        load_start = None
        for r in range(cfg.rows):
            ctx.set(dut.weights.valid, 1)
            ctx.set(dut.weights.payload, [int(v) for v in w[r]])
            while not ctx.get(dut.weights.ready):
                await ctx.tick()
                cycle += 1
            load_start = cycle if load_start is None else load_start
            await ctx.tick()
            cycle += 1
        ctx.set(dut.weights.valid, 0)
        out["load"] = cycle - load_start
        pending, sent = None, 0
        while len(out["y"]) < len(xs):
            if sent < len(xs):
                ctx.set(dut.input.valid, 1)
                ctx.set(dut.input.payload, [int(v) for v in xs[sent]])
            else:
                ctx.set(dut.input.valid, 0)
            take = cycle % ready_every == 0
            ctx.set(dut.output.ready, take)
            took_in = sent < len(xs) and ctx.get(dut.input.ready)
            if ctx.get(dut.output.valid):
                if pending is not None:
                    out["latency"].append(cycle - pending)
                    pending = None
                if take:
                    out["y"].append([ctx.get(dut.output.payload[c]) for c in range(cfg.cols)])
            if took_in:
                out["accept"].append(cycle)
                pending = cycle
                sent += 1
            await ctx.tick()
            cycle += 1
            assert cycle < 100_000, "tile hung"

    simulate(dut, tb, name="crossbar_tile")
    return out


def operands(cfg: CrossbarConfig, n: int, seed: int, k: int | None = None, m: int | None = None):
    """Random int8 operands in -127..127 with corners: full scale, zeros, sparse rows."""
    rng = np.random.default_rng(seed)
    k, m = k or cfg.rows, m or cfg.cols
    w = rng.integers(-127, 128, size=(cfg.rows, cfg.cols))
    w[k:] = 0
    w[:, m:] = 0
    w[0, :] = 127
    xs = rng.integers(-127, 128, size=(n, cfg.rows))
    xs[:, k:] = 0
    xs[0] = 127
    if n > 1:
        xs[1] = -127
    if n > 2:
        xs[2] = 0
    if n > 3:
        xs[3] *= rng.random(cfg.rows) < 0.2
    return w, xs


CONFIGS = {
    "8x4 c2 d1 lossless": CrossbarConfig(rows=8, cols=4, cell_bits=2, dac_bits=1),
    "8x4 c1 d2 msb1": CrossbarConfig(rows=8, cols=4, cell_bits=1, dac_bits=2, adc_bits=(3, 3, 3, 3, 3, 3, 1)),
    "6x4 c3 d3 scaled": CrossbarConfig(rows=6, cols=4, cell_bits=3, dac_bits=3, adc_bits=(4, 3, 2),
                                       adc_mode="scaled"),
    "4x4 c2 d4 shared adc": CrossbarConfig(rows=4, cols=4, cell_bits=2, dac_bits=4, adc_bits=(1, 3, 3, 3),
                                           cols_per_adc=2),
    "3x2 c7 d7 one slice": CrossbarConfig(rows=3, cols=2, cell_bits=7, dac_bits=7, adc_bits=8),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("sigma", [0.0, 2.5])
def test_tile_matches_mvm(name, sigma):
    cfg = CONFIGS[name]
    w, xs = operands(cfg, env_int("VITFORGE_SAMPLES", 5), seed=len(name))
    noise = NoiseGenerator(seed=0xC0FFEE + len(name), sigma_lsb=sigma) if sigma else None
    dut = CrossbarTile(config=cfg)
    got = run_tile(dut, w, xs, noise)
    want = mvm(xs, w, cfg, noise=noise)
    assert_equal(got["y"], want, f"tile {name}, sigma {sigma}", shape=want.shape)
    if sigma:
        assert not np.array_equal(want, mvm(xs, w, cfg)), "the noise changed nothing: a vacuous case"
    if cfg.is_lossless and not sigma:
        assert np.array_equal(want, xs @ w)


def test_tile_timing_matches_its_properties():
    cfg = CONFIGS["4x4 c2 d4 shared adc"]
    w, xs = operands(cfg, 4, seed=2)
    dut = CrossbarTile(config=cfg)
    assert dut.conversion_cycles == 4 * cfg.n_chunks * cfg.n_slices * cfg.cols_per_adc == 64
    got = run_tile(dut, w, xs, None)
    assert got["latency"] == [dut.latency] * len(xs)
    assert np.diff(got["accept"]).tolist() == [dut.interval] * (len(xs) - 1)
    assert got["load"] == dut.load_cycles
    slow = run_tile(CrossbarTile(config=cfg), w, xs, None, ready_every=7)  # back-pressure stalls, loses nothing
    assert_equal(slow["y"], mvm(xs, w, cfg), "tile under back-pressure")


def test_tiles_at_every_position_sum_to_the_noisy_mvm():
    """mvm over 3 row tiles x 3 column groups equals the sum of 9 tiles, each with its own lanes."""
    cfg = CrossbarConfig(rows=4, cols=2, cell_bits=2, dac_bits=2, adc_bits=(2, 3, 3, 4))
    rng = np.random.default_rng(8)
    w = rng.integers(-127, 128, size=(12, 6))
    xs = rng.integers(-127, 128, size=(3, 12))
    noise = NoiseGenerator(seed=77, sigma_lsb=3.0)
    y = np.zeros((3, 6), dtype=np.int64)
    for t in range(3):
        for g in range(0, 6, cfg.cols):
            dut = CrossbarTile(config=cfg, row_tile=t, col_base=g)
            rows, cols = slice(4 * t, 4 * t + 4), slice(g, g + cfg.cols)
            y[:, cols] += np.array(run_tile(dut, w[rows, cols], xs[:, rows], noise)["y"])
    assert_equal(y, mvm(xs, w, cfg, noise=noise), "9 tiles vs mvm with noise")


def test_minus_128_reads_as_minus_127():
    """Outside the contract (int8 is symmetric), the tile saturates -128 to -127 on both operands."""
    cfg = CrossbarConfig(rows=4, cols=2, cell_bits=2, dac_bits=2)
    w = np.array([[-128, 5], [3, -128], [0, 1], [-2, 2]])
    xs = np.array([[-128, 1, -128, 7], [3, -128, 0, 0]])
    got = run_tile(CrossbarTile(config=cfg), w, xs, None)["y"]
    assert_equal(got, mvm(np.maximum(xs, -127), np.maximum(w, -127), cfg), "tile with -128 operands")


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"config": 3}, TypeError, "config must be a CrossbarConfig, not int"),
        ({"config": CrossbarConfig(), "row_tile": -1}, ValueError, "row_tile must be a non-negative integer, not -1"),
        ({"config": CrossbarConfig(cols=4), "col_base": 65533}, ValueError, "col_base must be in 0..65532, not 65533"),
        ({"config": CrossbarConfig(rows=1 << 20, cell_bits=1, dac_bits=1)}, ValueError, "can exceed int32"),
    ],
)
def test_tile_refuses_bad_parameters(kwargs, err, match):
    """Bad parameters are refused before anything is built."""
    with pytest.raises(err, match=match):
        CrossbarTile(**kwargs)


def test_output_bound_covers_the_worst_case():
    from vitforge.hw.crossbar.tile import output_bound

    cfg = CrossbarConfig(rows=8, cols=2, cell_bits=2, dac_bits=1)
    x, w = np.full((1, 8), 127), np.full((8, 2), 127)
    assert abs(int(mvm(x, w, cfg)[0, 0])) <= output_bound(cfg) < 2**31
