"""The on-chip noise generator: xorshift32 lanes, the fixed-point Gaussian, determinism."""

import re

import numpy as np
import pytest

from vitforge.quant.crossbar import (
    G_RAW_STD,
    NOISE_MAX,
    CrossbarConfig,
    NoiseGenerator,
    initial_state,
    lane_ids,
    mvm,
    xorshift32,
)


def xorshift32_py(x: int) -> int:
    x ^= (x << 13) & 0xFFFFFFFF
    x ^= x >> 17
    x ^= (x << 5) & 0xFFFFFFFF
    return x


def test_xorshift32_matches_scalar_definition():
    x = 2463534242  # Marsaglia's example seed
    states = [x]
    for _ in range(5):
        x = xorshift32_py(x)
        states.append(x)
    got = [states[0]]
    s = np.array([states[0]], dtype=np.uint64)
    for _ in range(5):
        s = xorshift32(s)
        got.append(int(s[0]))
    assert got == states
    assert states[1] == 723471715  # Marsaglia (2003), xorshift32 with (13, 17, 5) from 2463534242


def test_samples_follow_the_written_definition():
    gen = NoiseGenerator(seed=0xDEADBEEF, sigma_lsb=3.0)
    lanes = lane_ids(1, 3, col_base=5)
    assert lanes.tolist() == [65536 + 5, 65536 + 6, 65536 + 7]
    got = gen.samples(7, lanes)
    for col, lane in enumerate(lanes.tolist()):
        x = initial_state(gen.seed, lane)
        assert x == (gen.seed ^ ((lane + 1) * 0x9E3779B9)) & 0xFFFFFFFF
        for i in range(7):
            x = xorshift32_py(x)
            g_raw = sum((x >> (8 * b)) & 0xFF for b in range(4)) - 510
            assert got[i, col] == (gen.sigma_code * g_raw + 2**15) >> 16


def test_zero_mixed_seed_is_replaced():
    lane = 0
    seed = (1 * 0x9E3779B9) & 0xFFFFFFFF  # seed XOR mix(lane 0) = 0
    assert initial_state(seed, lane) == 0x6D2B79F5
    assert int(NoiseGenerator(seed=seed).initial_states(np.array([lane]))[0]) == 0x6D2B79F5


def test_sigma_code_and_statistics():
    gen = NoiseGenerator(seed=11, sigma_lsb=4.0)
    assert gen.sigma_code == round(4.0 * 2**16 / G_RAW_STD)
    assert abs(gen.effective_sigma_lsb - 4.0) < G_RAW_STD / 2**16
    noise = gen.samples(2000, lane_ids(0, 64)).ravel()  # 128k samples
    # The standard error of the mean is 4 / sqrt(128000) = 0.011 and of the std about 0.008:
    # 5 standard errors each.
    assert abs(noise.mean()) < 0.06
    assert abs(noise.std() - 4.0) < 0.05
    assert np.abs(noise).max() <= NOISE_MAX
    # Columns are not copies of each other.
    grid = gen.samples(500, lane_ids(0, 4))
    assert abs(np.corrcoef(grid[:, 0], grid[:, 1])[0, 1]) < 0.15


def test_zero_sigma_adds_nothing_and_noise_is_deterministic():
    rng = np.random.default_rng(5)
    cfg = CrossbarConfig(rows=16, cols=8, cell_bits=2, dac_bits=2)
    x = rng.integers(-127, 128, size=(4, 30))
    w = rng.integers(-127, 128, size=(30, 6))
    assert np.array_equal(mvm(x, w, cfg, noise=NoiseGenerator(seed=9, sigma_lsb=0.0)), x @ w)
    a = mvm(x, w, cfg, noise=NoiseGenerator(seed=9, sigma_lsb=2.0))
    b = mvm(x, w, cfg, noise=NoiseGenerator(seed=9, sigma_lsb=2.0))
    c = mvm(x, w, cfg, noise=NoiseGenerator(seed=10, sigma_lsb=2.0))
    assert np.array_equal(a, b) and not np.array_equal(a, c) and not np.array_equal(a, x @ w)


def test_sigma_above_the_code_range_is_refused():
    with pytest.raises(ValueError, match=re.escape("sigma_lsb must be at most 147.8")):
        NoiseGenerator(sigma_lsb=200.0)
