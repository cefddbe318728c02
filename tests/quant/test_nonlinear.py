"""Integer nonlinear units: monotonicity, agreement with the float twins, and the error contract."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from vitforge.quant import nonlinear as nl
from vitforge.quant.approx import APPROX_FUNCTIONS, approx_report
from vitforge.quant.config import DEFAULT_NUMERICS as N
from vitforge.quant.config import NumericsConfig
from vitforge.quant.fixed import INT8, FixedFormat
from vitforge.quant.poly_tables import EXP2_NEG, GELU_RESIDUAL, SIGMOID_POS

D_FMT = FixedFormat(N.softmax_in.bits + 1, N.softmax_in.frac)
GELU_MIN_X = -0.7518  # GELU decreases below its minimum at about -0.7518 and increases above it


def nondecreasing(y: torch.Tensor) -> bool:
    return bool((y[1:] >= y[:-1]).all())


def test_sigmoid_and_exp_are_monotonic_over_every_code():
    assert nondecreasing(nl.int_sigmoid(N.sigmoid_in.codes(), N.sigmoid_in, N.sigmoid_out))
    d = torch.arange(D_FMT.qmin + 1, 1)
    assert nondecreasing(nl.int_exp(d, D_FMT, N.exp_out))


def test_gelu_is_monotonic_where_gelu_is():
    x = N.gelu_in.codes()
    y = nl.int_gelu(x, N.gelu_in, N.gelu_out)
    real = N.gelu_in.to_real(x)
    assert nondecreasing(y[real >= GELU_MIN_X])
    assert nondecreasing(-y[real <= GELU_MIN_X])


@given(st.lists(st.integers(-128, 127), min_size=1, max_size=80))
def test_softmax_preserves_order_and_sums_to_one(row):
    x = torch.tensor(row)
    p = nl.int_softmax(x, N.softmax_in, N.softmax_out, N.exp_out)
    order = torch.argsort(x, stable=True)
    assert nondecreasing(p[order])
    total = float(N.softmax_out.to_real(p).sum())
    assert abs(total - 1.0) <= len(row) * N.softmax_out.scale


def test_softmax_of_a_row_of_length_one_is_one_saturated():
    p = nl.int_softmax(torch.tensor([[-128], [127]]), N.softmax_in, N.softmax_out, N.exp_out)
    assert p.flatten().tolist() == [N.softmax_out.qmax] * 2


@given(st.lists(st.integers(-128, 127), min_size=2, max_size=64))
def test_layernorm_preserves_order(row):
    x = torch.tensor(row)
    n = nl.int_layernorm_normalize(x)
    order = torch.argsort(x, stable=True)
    assert nondecreasing(n[order])


def test_layernorm_of_a_constant_row_is_zero():
    assert nl.int_layernorm_normalize(torch.full((3, 16), -7)).abs().sum() == 0


@given(st.integers(0, 2**62 - 1))
def test_isqrt_is_exact_floor(v):
    s = int(nl.isqrt(torch.tensor([v])))
    assert s == math.isqrt(v)


@pytest.mark.parametrize("table", [GELU_RESIDUAL, SIGMOID_POS, EXP2_NEG], ids=lambda t: t.name)
def test_float_twin_evaluates_the_same_polynomial(table):
    in_frac = 14
    a = torch.arange(0, (1 << (table.domain_log2 + in_frac)) + 64, 7)
    integer = table.evaluate(a, in_frac).to(torch.float64) / 2**16
    twin = table.evaluate_float(a.to(torch.float64) / 2**in_frac)
    # The integer Horner floors twice at 2**-14 steps times coefficients below 2: < 4 LSB of Q.16.
    assert float((integer - twin).abs().max()) <= 4 / 2**16


@pytest.mark.parametrize(
    ("int_fn", "twin_fn", "exact_fn", "in_fmt", "out_fmt"),
    [
        (nl.int_gelu, nl.float_gelu, lambda x: torch.nn.functional.gelu(x), N.gelu_in, N.gelu_out),
        (nl.int_sigmoid, nl.float_sigmoid, torch.sigmoid, N.sigmoid_in, N.sigmoid_out),
    ],
    ids=["gelu", "sigmoid"],
)
def test_twins_match_the_integer_units(int_fn, twin_fn, exact_fn, in_fmt, out_fmt):
    q = in_fmt.codes()
    x = in_fmt.to_real(q)
    integer = out_fmt.to_real(int_fn(q, in_fmt, out_fmt))
    twin = twin_fn(x)
    # Output rounding (half an LSB) plus saturation at the top of an unsigned format (one LSB).
    assert float((integer - twin).abs().max()) <= out_fmt.scale * 1.5
    assert float((twin - exact_fn(x)).abs().max()) < 2e-3  # the polynomial fit itself


def test_exp_and_softmax_twins():
    d = torch.arange(D_FMT.qmin + 1, 1)
    integer = N.exp_out.to_real(nl.int_exp(d, D_FMT, N.exp_out))
    twin = nl.float_exp(D_FMT.to_real(d))
    assert float((integer - twin).abs().max()) <= N.exp_out.scale * 2
    rows = torch.randint(-128, 128, (64, 20))
    p_int = N.softmax_out.to_real(nl.int_softmax(rows, N.softmax_in, N.softmax_out, N.exp_out))
    p_twin = nl.float_softmax(N.softmax_in.to_real(rows))
    assert float((p_int - p_twin).abs().max()) <= N.softmax_out.scale  # 1.0 saturates to 127/128


def test_every_unit_beats_its_baseline_at_the_same_bit_widths():
    report = approx_report(N)
    assert set(report) == set(APPROX_FUNCTIONS)
    for name, r in report.items():
        assert r["max_abs_err"] <= r["ref_max_abs_err"], name
        assert r["mean_abs_err"] <= r["ref_mean_abs_err"], name
        assert r["input_bits"] >= 8 and r["output_bits"] >= 8


def test_errors_are_near_the_output_quantization_floor():
    report = approx_report(N)
    for name, fmt in [("gelu", N.gelu_out), ("sigmoid", N.sigmoid_out), ("exp", N.exp_out)]:
        # half an LSB of rounding plus saturation at the format's top; the polynomial adds < 1e-3
        assert report[name]["max_abs_err"] <= fmt.scale + 1e-3, name


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: nl.int_gelu(torch.tensor([200]), N.gelu_in, N.gelu_out), r"outside the s8.4 range"),
        (lambda: nl.int_gelu(torch.tensor([1.0]), N.gelu_in, N.gelu_out), "integer tensor"),
        (lambda: nl.int_exp(torch.tensor([3]), D_FMT, N.exp_out), "<= 0"),
        (lambda: nl.int_softmax(torch.zeros(0, dtype=torch.int64), N.softmax_in, N.softmax_out, N.exp_out), "empty"),
        (lambda: nl.int_layernorm_normalize(torch.tensor([300, 1])), "outside"),
        (lambda: nl.int_layernorm_normalize(torch.tensor([1, 2]), eps_q=-1), "eps_q"),
        (lambda: NumericsConfig(act_bits=20), "act_bits must be an integer in 2..16, not 20"),
        (lambda: NumericsConfig(sigmoid_out=FixedFormat(8, 8)), "unsigned"),
        (lambda: NumericsConfig(exp_out=FixedFormat(8, 8, signed=False)), "cannot hold exp"),
    ],
)
def test_bad_input_is_refused(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_layernorm_affine_requantizes_like_a_gemm():
    x = torch.randint(-128, 128, (5, 32))
    gamma, beta = torch.randint(-127, 128, (32,)), torch.randint(-5000, 5000, (32,))
    n = nl.int_layernorm_normalize(x)
    from vitforge.quant.fixed import requantize

    want = requantize(n * gamma + beta, 12345, 30, INT8)
    assert torch.equal(nl.int_layernorm(x, gamma, beta, 12345, 30), want)
