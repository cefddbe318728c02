"""Rounding, saturation and requantization: the integer contract."""

from fractions import Fraction
from math import floor

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from vitforge.quant.fixed import (
    INT8,
    REQUANT_MAX_SHIFT,
    REQUANT_MULT_BITS,
    FixedFormat,
    quantize_multiplier,
    requantize,
    round_shift,
    saturate,
)

int32s = st.integers(-(2**31), 2**31 - 1)
mults = st.integers(0, 2**REQUANT_MULT_BITS - 1)
shifts = st.integers(0, REQUANT_MAX_SHIFT)


def exact_round_half_up(num: int, shift: int) -> int:
    return floor(Fraction(num, 2**shift) + Fraction(1, 2))


@given(st.integers(-(2**50), 2**50), st.integers(0, 40))
def test_round_shift_is_round_half_up(x, s):
    assert int(round_shift(torch.tensor(x), s)) == exact_round_half_up(x, s)


def test_round_shift_ties_go_up():
    x = torch.tensor([-5, -3, -1, 1, 3, 5])  # x / 2 = -2.5, -1.5, -0.5, 0.5, 1.5, 2.5
    assert round_shift(x, 1).tolist() == [-2, -1, 0, 1, 2, 3]


@given(int32s, mults, shifts)
def test_requantize_matches_exact_rational(acc, mult, shift):
    got = int(requantize(torch.tensor([acc]), mult, shift))
    want = min(max(exact_round_half_up(acc * mult, shift), -128), 127)
    assert got == want


@given(st.lists(int32s, min_size=2, max_size=20), mults, shifts)
def test_requantize_is_monotonic(accs, mult, shift):
    acc = torch.tensor(sorted(accs))
    y = requantize(acc, mult, shift)
    assert bool((y[1:] >= y[:-1]).all())


def test_requantize_saturates():
    y = requantize(torch.tensor([2**31 - 1, -(2**31), 0]), 2**15, 8)
    assert y.tolist() == [127, -128, 0]


def test_requantize_per_channel():
    acc = torch.tensor([[100, 100], [-100, -100]])
    y = requantize(acc, torch.tensor([1 << 15, 1 << 14]), torch.tensor([16, 16]))
    assert y.tolist() == [[50, 25], [-50, -25]]


@given(st.floats(min_value=2.0**-40, max_value=2.0**15, allow_nan=False, allow_infinity=False))
def test_quantize_multiplier_is_accurate(real):
    mult, shift = quantize_multiplier(real)
    assert 0 < mult < 2**REQUANT_MULT_BITS and 0 <= shift <= REQUANT_MAX_SHIFT
    assert abs(mult * 2.0**-shift - real) <= 2.0 ** -(shift + 1)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), 2.0**17, 2.0**-60])
def test_quantize_multiplier_refuses(bad):
    with pytest.raises(ValueError, match="ratio"):
        quantize_multiplier(bad)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: requantize(torch.tensor([1.5]), 1, 1), "integer tensor"),
        (lambda: requantize(torch.tensor([], dtype=torch.int32), 1, 1), "empty"),
        (lambda: requantize(torch.tensor([2**31]), 1, 1), "outside"),
        (lambda: requantize(torch.tensor([1]), 2**16, 1), "multiplier must be in 0..65535"),
        (lambda: requantize(torch.tensor([1]), 1, 48), "shift must be in 0..47"),
        (lambda: FixedFormat(0, 0), "bits must be an integer in 1..48, not 0"),
        (lambda: FixedFormat(8, -1), "frac"),
    ],
)
def test_bad_input_is_refused_with_the_value(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_fixed_format_codes_and_saturation():
    u = FixedFormat(8, 8, signed=False)
    assert (u.qmin, u.qmax) == (0, 255)
    assert INT8.codes().numel() == 256
    assert saturate(torch.tensor([-300, 300]), INT8).tolist() == [-128, 127]
    assert FixedFormat(8, 4).from_real(torch.tensor([0.03125, -0.03125, 100.0])).tolist() == [1, 0, 127]
