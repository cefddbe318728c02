"""Integer nonlinear units (GELU, exp, softmax, LayerNorm, sigmoid) and their float training twins.

Each ``int_*`` function is the bit-exact reference of one hardware unit; its float twin
(``float_*``) evaluates the same approximation in real arithmetic so training sees what the
hardware computes (the fake-quant modules take the value from the integer path and the
gradient from the twin). Formats are fixed point with power-of-two scales
(:class:`~vitforge.quant.fixed.FixedFormat`); the GEMM's requantization maps any accumulator
scale onto them. The formats the hardware uses are in :class:`~vitforge.quant.config.NumericsConfig`.

Algorithms (all shifts flooring unless "round" is said; "round" is round half up):

* **GELU**: ``gelu(x) = relu(x) - g(|x|)`` with ``g(a) = a (1 - Phi(a))`` a small bump,
  approximated by :data:`~vitforge.quant.poly_tables.GELU_RESIDUAL`; the result is rounded to
  the output format.
* **exp** (inputs ``d <= 0``): ``u = -d * LOG2E`` (``LOG2E`` in ``Q.LOG2E_FRAC``),
  ``z = floor(u)``, ``f`` = the fraction of ``u`` truncated to ``Q.LOG2E_FRAC``;
  ``exp(d) = 2**-z * 2**-f`` with ``2**-f`` from :data:`~vitforge.quant.poly_tables.EXP2_NEG`,
  rounded by ``z`` more bits.
* **softmax** (row-wise): ``d = x - max(x)``; ``e = exp(d)``; ``S = sum(e)``;
  ``r = floor(2**SOFTMAX_RECIP_BITS / S)`` (one divider per row); ``p = round(e * r)``, saturated.
* **LayerNorm** (row-wise over ``D``, scale-invariant): ``c = D x - sum(x)`` (exact);
  ``V = sum(c**2)``; ``s = max(isqrt(V + eps_q), 1)``; ``r = floor(2**LN_RECIP_BITS / s)``;
  ``g = round(r * SQRT_D)`` with ``SQRT_D = round(sqrt(D) 2**LN_SQRT_FRAC)``;
  ``n = round(c * g)`` in ``Q.LN_NORM_FRAC`` (the normalized value); then the affine
  ``acc = n * gamma_q + beta_q`` is requantized like a GEMM output.
* **sigmoid**: ``sigmoid(|x|)`` from :data:`~vitforge.quant.poly_tables.SIGMOID_POS`, mirrored
  (``1 - s``) for negative inputs, rounded to the output format.
"""

from __future__ import annotations

import math

import torch

from .fixed import (
    INT8,
    FixedFormat,
    check_int_tensor,
    check_requant_params,
    round_shift,
    saturate,
)
from .poly import COEF_FRAC
from .poly_tables import EXP2_NEG, GELU_RESIDUAL, SIGMOID_POS

#: Fractional bits of log2(e) in the exp unit.
LOG2E_FRAC = 14
LOG2E_Q = round(math.log2(math.e) * (1 << LOG2E_FRAC))
#: The exp unit's output is 0 once the exponent shift reaches this (2**-48 is below any format).
EXP_MAX_SHIFT = 48
#: Precision of the softmax row reciprocal, floor(2**SOFTMAX_RECIP_BITS / sum).
SOFTMAX_RECIP_BITS = 40
#: LayerNorm: reciprocal precision, sqrt(D) fractional bits, normalized-value fractional bits.
LN_RECIP_BITS = 36
LN_SQRT_FRAC = 12
LN_NORM_FRAC = 10


def _check_out(fmt: FixedFormat, name: str) -> None:
    if fmt.frac > COEF_FRAC:
        raise ValueError(f"{name} format {fmt} has more than {COEF_FRAC} fractional bits")


def _to_coef(x: torch.Tensor, frac: int) -> torch.Tensor:
    """Codes in ``Q.frac`` (``frac <= COEF_FRAC``) to ``Q.COEF_FRAC``."""
    return x << (COEF_FRAC - frac)


# --- GELU ----------------------------------------------------------------------------------------


def int_gelu(x: torch.Tensor, in_fmt: FixedFormat, out_fmt: FixedFormat) -> torch.Tensor:
    """GELU unit. ``x``: codes in ``in_fmt`` (any shape). Returns int64 codes in ``out_fmt``."""
    _check_out(in_fmt, "GELU input")
    _check_out(out_fmt, "GELU output")
    x = check_int_tensor(x, "GELU input", in_fmt)
    g = GELU_RESIDUAL.evaluate(x.abs(), in_fmt.frac)
    y = _to_coef(x.clamp(min=0), in_fmt.frac) - g
    return saturate(round_shift(y, COEF_FRAC - out_fmt.frac), out_fmt)


def float_gelu(x: torch.Tensor) -> torch.Tensor:
    """Training twin of :func:`int_gelu` (real-valued, differentiable)."""
    return torch.relu(x) - GELU_RESIDUAL.evaluate_float(x.abs())


# --- exp and softmax -----------------------------------------------------------------------------


def int_exp(d: torch.Tensor, in_fmt: FixedFormat, out_fmt: FixedFormat) -> torch.Tensor:
    """exp unit for ``d <= 0``. ``d``: codes in ``in_fmt``. Returns int64 codes in ``out_fmt``."""
    _check_out(out_fmt, "exp output")
    d = check_int_tensor(d, "exp input", in_fmt)
    if bool((d > 0).any()):
        raise ValueError(f"exp input must be <= 0 (max-subtracted), got {int(d.max())}")
    u = (-d) * LOG2E_Q  # Q.(in_frac + LOG2E_FRAC)
    z = u >> (in_fmt.frac + LOG2E_FRAC)
    f = (u >> in_fmt.frac) & ((1 << LOG2E_FRAC) - 1)  # Q.LOG2E_FRAC in [0, 1)
    p = EXP2_NEG.evaluate(f, LOG2E_FRAC)  # Q.COEF_FRAC in (0.5, 1]
    shift = (z + (COEF_FRAC - out_fmt.frac)).clamp(max=EXP_MAX_SHIFT)
    return saturate(round_shift(p, shift), out_fmt)


def float_exp(d: torch.Tensor) -> torch.Tensor:
    """Training twin of :func:`int_exp`: ``2**-floor(u) * poly(frac(u))``, ``u = -d log2 e``."""
    u = -d * math.log2(math.e)
    z = torch.floor(u.detach())
    return torch.exp2(-z) * EXP2_NEG.evaluate_float(u - z)


def int_softmax(
    x: torch.Tensor,
    in_fmt: FixedFormat,
    out_fmt: FixedFormat,
    exp_fmt: FixedFormat,
) -> torch.Tensor:
    """Row-wise softmax unit over the last dimension.

    Args:
        x: ``(..., n)`` codes in ``in_fmt``.
        in_fmt: input format; ``x - max(x)`` uses one more bit.
        out_fmt: probability format (e.g. s8.7: 1.0 saturates to 127/128).
        exp_fmt: the exp unit's unsigned output format (e.g. u16.15).

    Returns:
        ``(..., n)`` int64 codes in ``out_fmt``.
    """
    x = check_int_tensor(x, "softmax input", in_fmt)
    d = x - x.amax(dim=-1, keepdim=True)
    d_fmt = FixedFormat(in_fmt.bits + 1, in_fmt.frac)
    e = int_exp(d, d_fmt, exp_fmt)
    total = e.sum(dim=-1, keepdim=True)  # >= 2**exp_fmt.frac: the max element has e = 1.0
    recip = (1 << SOFTMAX_RECIP_BITS) // total
    return saturate(round_shift(e * recip, SOFTMAX_RECIP_BITS - out_fmt.frac), out_fmt)


def float_softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Training twin of :func:`int_softmax`."""
    e = float_exp(x - x.detach().amax(dim=dim, keepdim=True))
    return e / e.sum(dim=dim, keepdim=True)


# --- LayerNorm -----------------------------------------------------------------------------------


def isqrt(v: torch.Tensor) -> torch.Tensor:
    """``floor(sqrt(v))`` for non-negative int64 ``v < 2**62`` (exact, as the digit-by-digit unit)."""
    if bool((v < 0).any()):
        raise ValueError(f"isqrt input must be non-negative, got {int(v.min())}")
    s = torch.floor(torch.sqrt(v.to(torch.float64))).to(torch.int64)
    s = torch.where(s * s > v, s - 1, s)  # float rounding correction, at most one step each way
    s = torch.where((s + 1) * (s + 1) <= v, s + 1, s)
    return s


def layernorm_sqrt_d(dim: int) -> int:
    """``round(sqrt(D) * 2**LN_SQRT_FRAC)``: the unit's constant for row length ``D``."""
    if dim < 1:
        raise ValueError(f"LayerNorm row length must be positive, not {dim}")
    return round(math.sqrt(dim) * (1 << LN_SQRT_FRAC))


def int_layernorm_normalize(x: torch.Tensor, eps_q: int = 1) -> torch.Tensor:
    """The normalizing half of the LayerNorm unit.

    Args:
        x: ``(..., D)`` int8 codes (any scale: LayerNorm is scale-invariant).
        eps_q: epsilon in the unit's variance units, ``eps * D**3 / scale**2`` rounded (>= 0).

    Returns:
        ``(..., D)`` int64 normalized values ``(x - mean) / std`` in ``Q.LN_NORM_FRAC``.
    """
    x = check_int_tensor(x, "LayerNorm input", INT8)
    if isinstance(eps_q, bool) or not isinstance(eps_q, int) or eps_q < 0:
        raise ValueError(f"LayerNorm eps_q must be a non-negative integer, not {eps_q!r}")
    dim = x.shape[-1]
    c = dim * x - x.sum(dim=-1, keepdim=True)
    var = (c * c).sum(dim=-1, keepdim=True)
    s = isqrt(var + eps_q).clamp(min=1)
    recip = (1 << LN_RECIP_BITS) // s
    g = round_shift(recip * layernorm_sqrt_d(dim), LN_SQRT_FRAC)
    return round_shift(c * g, LN_RECIP_BITS - LN_NORM_FRAC)


def int_layernorm(
    x: torch.Tensor,
    gamma_q: torch.Tensor,
    beta_q: torch.Tensor,
    mult: torch.Tensor | int,
    shift: torch.Tensor | int,
    out_fmt: FixedFormat = INT8,
    eps_q: int = 1,
) -> torch.Tensor:
    """LayerNorm unit: normalize, then ``requantize(n * gamma_q + beta_q, mult, shift)``.

    Args:
        x: ``(..., D)`` int8 codes.
        gamma_q: ``(D,)`` int8 codes of gamma (scale ``s_g``).
        beta_q: ``(D,)`` int32 codes of beta at scale ``s_g * 2**-LN_NORM_FRAC``.
        mult, shift: requantization from ``s_g * 2**-LN_NORM_FRAC`` to the output scale.
        out_fmt: output format.
        eps_q: see :func:`int_layernorm_normalize`.

    Returns:
        ``(..., D)`` int64 codes in ``out_fmt``.
    """
    dim = x.shape[-1]
    gamma_q = check_int_tensor(gamma_q, "LayerNorm gamma", INT8)
    beta_q = check_int_tensor(beta_q, "LayerNorm beta", FixedFormat(32, 0))
    if gamma_q.shape != (dim,) or beta_q.shape != (dim,):
        raise ValueError(
            f"LayerNorm gamma/beta must have shape ({dim},), got {tuple(gamma_q.shape)}/{tuple(beta_q.shape)}"
        )
    mult_t = torch.as_tensor(mult, dtype=torch.int64)
    shift_t = torch.as_tensor(shift, dtype=torch.int64)
    check_requant_params(mult_t, shift_t)
    n = int_layernorm_normalize(x, eps_q)
    acc = n * gamma_q + beta_q
    return saturate(round_shift(acc * mult_t, shift_t), out_fmt)


def float_layernorm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Training twin of :func:`int_layernorm_normalize` (the unit computes LayerNorm exactly,
    up to rounding)."""
    return torch.nn.functional.layer_norm(x, x.shape[-1:], eps=eps)


# --- sigmoid -------------------------------------------------------------------------------------


def int_sigmoid(x: torch.Tensor, in_fmt: FixedFormat, out_fmt: FixedFormat) -> torch.Tensor:
    """Sigmoid unit. ``x``: codes in ``in_fmt``. Returns int64 codes in ``out_fmt`` (e.g. u8.8)."""
    _check_out(in_fmt, "sigmoid input")
    _check_out(out_fmt, "sigmoid output")
    x = check_int_tensor(x, "sigmoid input", in_fmt)
    s = SIGMOID_POS.evaluate(x.abs(), in_fmt.frac)
    y = torch.where(x >= 0, s, (1 << COEF_FRAC) - s)
    return saturate(round_shift(y, COEF_FRAC - out_fmt.frac), out_fmt)


def float_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Training twin of :func:`int_sigmoid`."""
    s = SIGMOID_POS.evaluate_float(x.abs())
    return torch.where(x >= 0, s, 1.0 - s)
