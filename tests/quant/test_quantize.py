"""Symmetric quantization and calibration."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from vitforge.quant.quantize import calibrate_scale, dequantize, quantize


@given(st.integers(2, 16), st.integers(0, 2**31 - 1))
def test_round_trip_error_is_at_most_half_a_step(bits, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, generator=g, dtype=torch.float64) * 3
    s = calibrate_scale(x, bits=bits)
    q = quantize(x, s, bits=bits)
    qmax = 2 ** (bits - 1) - 1
    assert int(q.abs().max()) <= qmax
    assert float((dequantize(q, s) - x).abs().max()) <= float(s) / 2 * (1 + 1e-12)


def test_quantize_rounds_half_up_and_saturates():
    q = quantize(torch.tensor([0.5, -0.5, 1.5, 1000.0, -1000.0]), 1.0)
    assert q.tolist() == [1, 0, 2, 127, -127]


def test_per_channel_scales_follow_each_channel():
    w = torch.tensor([[1.0, -2.0], [0.01, 0.02]])
    s = calibrate_scale(w, axis=0)
    assert torch.allclose(s, torch.tensor([2.0 / 127, 0.02 / 127], dtype=torch.float64))
    q = quantize(w, s, axis=0)
    assert q[:, 1].abs().tolist() == [127, 127]


def test_percentile_rule_clips_outliers():
    x = torch.cat([torch.linspace(-1, 1, 10000), torch.tensor([100.0])])
    assert float(calibrate_scale(x, rule="percentile", percentile=99.0)) < float(calibrate_scale(x, rule="max")) / 50


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: quantize(torch.ones(3), 1.0, bits=1), "bits must be an integer in 2..16, not 1"),
        (lambda: quantize(torch.ones(3), 1.0, bits=17), "not 17"),
        (lambda: quantize(torch.ones(3), 0.0), "finite and positive"),
        (lambda: quantize(torch.ones(3), float("nan")), "finite and positive"),
        (lambda: quantize(torch.ones(3), -2.0), "-2.0"),
        (lambda: quantize(torch.ones(0), 1.0), "empty"),
        (lambda: quantize(torch.ones(3, dtype=torch.int32), 1.0), "floating-point"),
        (lambda: calibrate_scale(torch.tensor([float("inf")])), "non-finite"),
        (lambda: calibrate_scale(torch.ones(3), rule="mse"), "'max' or 'percentile'"),
        (lambda: quantize(torch.ones(2, 3), torch.ones(3), axis=0), r"shape \(2,\)"),
    ],
)
def test_bad_input_is_refused(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()
