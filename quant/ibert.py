"""Reference approximations at the same bit widths: I-BERT (Kim et al. 2021) and PLAN.

These are the baselines ``vitforge approx`` compares against. They follow the published
integer algorithms (I-BERT's i-GELU, i-exp, softmax and LayerNorm with integer square root;
the PLAN piecewise-linear sigmoid). Inputs are codes at the same input format as vitforge's
units; each result is converted to the same output format by rounding its real value half up
and saturating, which is generous to the baseline (no extra integer rounding).
"""

from __future__ import annotations

import math

import torch

from .fixed import FixedFormat
from .nonlinear import isqrt

# I-BERT constants (arXiv 2101.01321, section 3 and appendix).
IGELU_A, IGELU_B = -0.2888, -1.769
IEXP_COEFFS = (0.35815147, 0.96963238, 1.0)  # a (p + b)^2 + c written as a p^2 + a' p + c'
IEXP_LN2 = -0.6931
IEXP_MAX_Z = 30


def _floor(x: float) -> int:
    return math.floor(x)


def _to_format(real: torch.Tensor, fmt: FixedFormat) -> torch.Tensor:
    return fmt.from_real(real)


def ibert_gelu(x: torch.Tensor, in_fmt: FixedFormat, out_fmt: FixedFormat) -> torch.Tensor:
    """i-GELU: ``x/2 (1 + L(x/sqrt 2))``, ``L(u) = sgn(u) (a (min(|u|, -b) + b)**2 + 1)``."""
    x = x.to(torch.int64)
    sf = in_fmt.scale / math.sqrt(2.0)
    b_int = _floor(IGELU_B / sf)
    c_int = _floor((1.0 / IGELU_A) / sf**2)
    sign = torch.sign(x)
    a = torch.minimum(x.abs(), torch.tensor(-b_int))
    l_int = sign * ((a + b_int) ** 2 + c_int)  # scale sf**2 * IGELU_A
    sf_l = sf**2 * IGELU_A
    one_int = _floor(1.0 / sf_l)
    y_int = x * (l_int + one_int)  # scale in_scale * sf_l / 2
    return _to_format(y_int.to(torch.float64) * (in_fmt.scale * sf_l / 2.0), out_fmt)


def _ibert_exp_int(d: torch.Tensor, scale: float) -> tuple[torch.Tensor, float]:
    """i-exp on codes ``d <= 0`` at ``scale``: returns (integer result, its scale)."""
    x0_int = _floor(IEXP_LN2 / scale)
    d = torch.maximum(d.to(torch.int64), torch.tensor(IEXP_MAX_Z * x0_int))
    z = torch.div(d, x0_int, rounding_mode="floor")
    p = d - x0_int * z
    a, b, c = IEXP_COEFFS
    b_int = _floor((b / a) / scale)
    c_int = _floor((c / a) / scale**2)
    poly = p * (p + b_int) + c_int  # scale a * scale**2
    exp_int = torch.floor(poly.to(torch.float64) * torch.exp2((IEXP_MAX_Z - z).to(torch.float64)))
    exp_int = exp_int.clamp(min=0).to(torch.int64)
    return exp_int, a * scale**2 / 2.0**IEXP_MAX_Z


def ibert_exp(d: torch.Tensor, in_fmt: FixedFormat, out_fmt: FixedFormat) -> torch.Tensor:
    """i-exp: ``exp(p) ~ 0.3585 (p + 1.353)**2 + 0.344`` on ``(-ln 2, 0]``, shifted by ``z``."""
    exp_int, sf = _ibert_exp_int(d, in_fmt.scale)
    return _to_format(exp_int.to(torch.float64) * sf, out_fmt)


def ibert_softmax(
    x: torch.Tensor, in_fmt: FixedFormat, out_fmt: FixedFormat, exp_fmt: FixedFormat
) -> torch.Tensor:
    """I-BERT softmax: i-exp of ``x - max`` requantized to ``exp_fmt`` (I-BERT's 16-bit QuantAct,
    which keeps the sum from overflowing), ``floor(2**32 / sum)``, shifted to the output bits."""
    x = x.to(torch.int64)
    d = x - x.amax(dim=-1, keepdim=True)
    exp_int = ibert_exp(d, FixedFormat(in_fmt.bits + 1, in_fmt.frac), exp_fmt)
    factor = torch.div(2**32, exp_int.sum(dim=-1, keepdim=True), rounding_mode="floor")
    p = torch.div(exp_int * factor, 2 ** (32 - out_fmt.frac), rounding_mode="floor")
    return p.clamp(out_fmt.qmin, out_fmt.qmax)


def ibert_layernorm(x: torch.Tensor, out_fmt: FixedFormat) -> torch.Tensor:
    """I-BERT LayerNorm (no affine): integer mean, ``floor(sqrt(var))``, ``floor(2**31 / std)``."""
    x = x.to(torch.int64)
    dim = x.shape[-1]
    mean = torch.floor(x.sum(dim=-1, keepdim=True).to(torch.float64) / dim + 0.5).to(torch.int64)
    y = x - mean
    std = isqrt((y * y).sum(dim=-1, keepdim=True)).clamp(min=1)
    factor = torch.div(2**31, std, rounding_mode="floor")
    y_int = torch.div(y * factor, 2, rounding_mode="floor")  # scale sqrt(D) / 2**30
    return _to_format(y_int.to(torch.float64) * (math.sqrt(dim) / 2**30), out_fmt)


def plan_sigmoid(x: torch.Tensor, in_fmt: FixedFormat, out_fmt: FixedFormat) -> torch.Tensor:
    """PLAN: slopes 1/4, 1/8, 1/32 with breakpoints 1, 2.375, 5, mirrored for negative inputs."""
    a = in_fmt.to_real(x.to(torch.int64)).abs()
    y = torch.where(
        a >= 5.0,
        torch.ones_like(a),
        torch.where(a >= 2.375, 0.03125 * a + 0.84375, torch.where(a >= 1.0, 0.125 * a + 0.625, 0.25 * a + 0.5)),
    )
    y = torch.where(x >= 0, y, 1.0 - y)
    return _to_format(y, out_fmt)
