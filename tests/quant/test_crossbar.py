"""The crossbar's integer contract: slicing, ADCs, lossless equality with x @ w."""

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vitforge.quant.crossbar import (
    CrossbarConfig,
    NoiseGenerator,
    adc,
    column_sums,
    lossless_adc_bits,
    mvm,
)


def reference_mvm(x: np.ndarray, w: np.ndarray, cfg: CrossbarConfig, noise=None) -> np.ndarray:
    """The contract written out loop by loop (slow, for small cases): the spec, independently."""
    n, k = x.shape
    m = w.shape[1]
    y = np.zeros((n, m), dtype=np.int64)
    tiles = max(1, -(-k // cfg.rows))
    draws = None
    if noise is not None:
        from vitforge.quant.crossbar import lane_ids

        lanes = np.concatenate([lane_ids(t, m) for t in range(tiles)])
        draws = noise.samples(n * cfg.conversions_per_vector, lanes).reshape(n, -1, tiles, m)
    big_l = cfg.lossless_bits
    for i in range(n):
        conv = 0
        for px in (0, 1):
            for pw in (0, 1):
                for j in range(cfg.n_chunks):
                    for kk in range(cfg.n_slices):
                        nb = cfg.slice_adc_bits[kk]
                        for t in range(tiles):
                            for col in range(m):
                                s = 0
                                for r in range(t * cfg.rows, min(k, (t + 1) * cfg.rows)):
                                    xv, wv = int(x[i, r]), int(w[r, col])
                                    xm = xv if (xv > 0 and px == 0) or (xv < 0 and px == 1) else 0
                                    wm = wv if (wv > 0 and pw == 0) or (wv < 0 and pw == 1) else 0
                                    xm, wm = abs(xm), abs(wm)
                                    s += ((xm >> (j * cfg.dac_bits)) & cfg.dac_max) * (
                                        (wm >> (kk * cfg.cell_bits)) & cfg.cell_max
                                    )
                                if draws is not None:
                                    s += int(draws[i, conv, t, col])
                                if cfg.adc_mode == "saturate":
                                    a = min(max(s, 0), 2**nb - 1)
                                else:
                                    sh = max(big_l - nb, 0)
                                    q = (s + (1 << (sh - 1))) >> sh if sh else s
                                    a = min(max(q, 0), 2**nb - 1) << sh
                                sign = 1 if px == pw else -1
                                y[i, col] += sign * (a << (j * cfg.dac_bits + kk * cfg.cell_bits))
                        conv += 1
    return y


def test_counts_and_lossless_width():
    cfg = CrossbarConfig(rows=128, cols=8, cell_bits=2, dac_bits=1)
    assert (cfg.n_slices, cfg.n_chunks, cfg.lossless_bits) == (4, 7, 9)  # REFERENCE.md: 128 rows, c=2, d=1: 9
    assert cfg.slice_adc_bits == (9, 9, 9, 9) and cfg.is_lossless
    assert lossless_adc_bits(32, 1, 2) == 7  # 32 * 1 * 3 = 96 -> 7 bits
    assert lossless_adc_bits(1, 1, 1) == 1
    assert CrossbarConfig(cell_bits=3, dac_bits=7).n_slices == 3
    assert CrossbarConfig(adc_bits=(1, 3, 3, 3)).slice_adc_bits == (1, 3, 3, 3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cell_bits": 0}, "cell_bits must be an integer in 1..7, not 0"),
        ({"cell_bits": 8}, "cell_bits must be an integer in 1..7, not 8"),
        ({"dac_bits": 9}, "dac_bits must be an integer in 1..7, not 9"),
        ({"adc_bits": 0}, "adc_bits must be integers in 1..24, not 0"),
        ({"adc_bits": (1, 3, 0, 3)}, "adc_bits must be integers in 1..24, not 0"),
        ({"adc_bits": (1, 3)}, "one entry per slice: 4 for cell_bits = 2, not 2"),
        ({"rows": 0}, "rows must be a positive integer, not 0"),
        ({"cols": -3}, "cols must be a positive integer, not -3"),
        ({"adc_mode": "linear"}, "adc_mode must be one of .*, not 'linear'"),
        ({"cols_per_adc": 5}, "cols_per_adc must divide cols = 32, not 5"),
        ({"g_on": 1e-7}, "g_on must be a finite number > 3.33333e-07"),
        ({"prog_sigma": -0.1}, "prog_sigma must be a finite number >= 0, not -0.1"),
        ({"rtn_fraction": 1.5}, "rtn_fraction must be a finite number >= 0 and <= 1, not 1.5"),
    ],
)
def test_bad_config_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CrossbarConfig(**kwargs)


def test_bad_noise_and_operands_are_refused():
    with pytest.raises(ValueError, match=re.escape("sigma_lsb must be a finite number >= 0, not -1.0")):
        NoiseGenerator(seed=1, sigma_lsb=-1.0)
    with pytest.raises(ValueError, match=re.escape("seed must be an integer in 0..2^32-1, not -1")):
        NoiseGenerator(seed=-1)
    cfg = CrossbarConfig()
    with pytest.raises(ValueError, match=re.escape("x must hold integers in -127..127, not -128")):
        mvm(np.array([[-128]]), np.array([[1]]), cfg)
    with pytest.raises(TypeError, match="w must be an integer array, not float64"):
        mvm(np.array([[1]]), np.array([[1.0]]), cfg)
    with pytest.raises(ValueError, match="disagree on K"):
        mvm(np.zeros((1, 3), dtype=np.int8), np.zeros((4, 2), dtype=np.int8), cfg)
    with pytest.raises(ValueError, match="mode must be 'saturate' or 'scaled', not 'x'"):
        adc(np.array([1]), 3, 5, "x")


def test_adc_modes_by_hand():
    s = np.array([-3, 0, 5, 7, 8, 40, 95, 120])
    assert adc(s, 3, 7, "saturate").tolist() == [0, 0, 5, 7, 7, 7, 7, 7]
    # scaled, L = 7, N = 3: shift 4, floor(s / 16 + 1/2) clamped to 0..7, times 16
    assert adc(s, 3, 7, "scaled").tolist() == [0, 0, 0, 0, 16, 48, 96, 112]
    assert adc(s, 7, 7, "scaled").tolist() == [0, 0, 5, 7, 8, 40, 95, 120]
    assert adc(torch.tensor([9, 200]), 8, 7, "saturate").tolist() == [9, 200]


configs = st.builds(
    CrossbarConfig,
    rows=st.integers(1, 40),
    cols=st.just(8),
    cell_bits=st.integers(1, 7),
    dac_bits=st.integers(1, 7),
    adc_mode=st.sampled_from(["saturate", "scaled"]),
)


@st.composite
def operands(draw, max_n=4, max_k=90, max_m=6):
    n, k, m = draw(st.integers(1, max_n)), draw(st.integers(1, max_k)), draw(st.integers(1, max_m))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = rng.integers(-127, 128, size=(n, k))
    w = rng.integers(-127, 128, size=(k, m))
    if draw(st.booleans()):  # sparse operands: many zero slices
        x = x * (rng.random(x.shape) < 0.3)
        w = w * (rng.random(w.shape) < 0.3)
    return x, w


@settings(max_examples=60, deadline=None)
@given(configs, operands())
def test_lossless_equals_matmul(cfg, xw):
    x, w = xw
    assert cfg.is_lossless
    assert np.array_equal(mvm(x, w, cfg), x @ w)


@settings(max_examples=20, deadline=None)
@given(configs, operands(), st.integers(1, 24))
def test_more_adc_bits_than_lossless_is_exact(cfg, xw, extra):
    from dataclasses import replace

    x, w = xw
    cfg = replace(cfg, adc_bits=min(cfg.lossless_bits + extra, 24))
    assert np.array_equal(mvm(x, w, cfg), x @ w)


@settings(max_examples=40, deadline=None)
@given(
    st.builds(
        CrossbarConfig,
        rows=st.integers(1, 12),
        cols=st.just(4),
        cell_bits=st.integers(1, 4),
        dac_bits=st.integers(1, 4),
        adc_mode=st.sampled_from(["saturate", "scaled"]),
    ),
    operands(max_n=2, max_k=20, max_m=3),
    st.data(),
)
def test_lossy_and_noisy_equal_loop_reference(cfg, xw, data):
    from dataclasses import replace

    x, w = xw
    bits = tuple(data.draw(st.integers(1, cfg.lossless_bits + 1)) for _ in range(cfg.n_slices))
    cfg = replace(cfg, adc_bits=bits)
    noise = data.draw(st.none() | st.builds(NoiseGenerator, st.integers(0, 2**32 - 1), st.floats(0.0, 6.0)))
    assert np.array_equal(mvm(x, w, cfg, noise=noise), reference_mvm(x, w, cfg, noise))


def test_torch_in_torch_out_and_numpy_in_numpy_out():
    cfg = CrossbarConfig(rows=8, cols=4)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-127, 128, (3, 20), generator=g, dtype=torch.int8)
    w = torch.randint(-127, 128, (20, 5), generator=g, dtype=torch.int8)
    y = mvm(x, w, cfg)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.int64 and y.shape == (3, 5)
    assert torch.equal(y, x.long() @ w.long())
    yn = mvm(x.numpy(), w.numpy(), cfg)
    assert isinstance(yn, np.ndarray) and yn.dtype == np.int64


def test_lossy_adc_loses_and_saturate_never_overshoots():
    rng = np.random.default_rng(3)
    cfg = CrossbarConfig(rows=32, cols=8, cell_bits=2, dac_bits=1, adc_bits=(1, 3, 3, 3))
    x = rng.integers(0, 128, size=(16, 32))  # positive: one polarity pair carries everything
    w = rng.integers(0, 128, size=(32, 8))
    y, exact = mvm(x, w, cfg), x @ w
    assert not np.array_equal(y, exact)
    assert (y <= exact).all()  # saturating clamps only lower non-negative sums


def test_column_sums_shape_and_bound():
    rng = np.random.default_rng(4)
    cfg = CrossbarConfig(rows=16, cols=8, cell_bits=3, dac_bits=2)
    x = rng.integers(-127, 128, size=(2, 40))
    w = rng.integers(-127, 128, size=(40, 5))
    s = column_sums(x, w, cfg)
    assert s.shape == (2, 3, 2, 2, cfg.n_chunks, cfg.n_slices, 5)
    assert s.min() >= 0 and s.max() < 2**cfg.lossless_bits


def test_config_round_trips_through_json():
    import json

    cfg = CrossbarConfig(rows=64, cols=16, cell_bits=1, dac_bits=2, adc_bits=(3, 3, 3, 3, 3, 3, 1), prog_sigma=0.2)
    assert CrossbarConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match=re.escape("unknown CrossbarConfig field(s) ['bogus']")):
        CrossbarConfig.from_dict({"bogus": 1})
