"""Bit-exact reference of every hardware operation: what the RTL, the golden model and the
runtime must compute. Tests, the golden model and the runtime call these, and nothing else.

Matrix layouts follow the hardware: activations ``(tokens, features)``, weights
``(in_features, out_features)`` (the GEMM computes ``a @ w``), per-output-channel requantization
along the last dimension.
"""

from __future__ import annotations

import torch

from .config import NumericsConfig
from .fixed import (
    ACC_BITS,
    INT8,
    INT32,
    FixedFormat,
    check_int_tensor,
    check_requant_params,
    requantize,
    round_shift,
    saturate,
)
from .nonlinear import int_gelu, int_layernorm, int_sigmoid, int_softmax

__all__ = [
    "gelu_unit",
    "gemm",
    "gemm_acc",
    "int_gelu",
    "int_layernorm",
    "int_sigmoid",
    "int_softmax",
    "residual_add",
    "sigmoid_unit",
    "softmax_unit",
]

#: float64 represents every integer below 2**53 exactly: the GEMM's accumulation in float64
#: is exact while K * 2**14 stays below that (K < 2**39).
_EXACT_F64 = 1 << 53


def gemm_acc(a: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """int8 x int8 -> int32 matrix product with optional int32 bias: ``a @ w + bias``.

    Args:
        a: ``(..., M, K)`` int8 codes.
        w: ``(K, N)`` int8 weight codes, or ``(..., K, N)`` activation codes broadcastable
            against ``a`` (``Q K^T`` and ``attn V`` per head).
        bias: ``(N,)`` int32 codes at the accumulator's scale, or None.

    Returns:
        ``(..., M, N)`` int64 accumulators, checked to fit int32 (the hardware accumulator
        width); an overflow raises instead of wrapping.
    """
    a = check_int_tensor(a, "GEMM activations", INT8)
    w = check_int_tensor(w, "GEMM weights", INT8)
    if w.dim() < 2 or a.shape[-1] != w.shape[-2]:
        raise ValueError(f"GEMM shapes do not chain: activations {tuple(a.shape)} @ weights {tuple(w.shape)}")
    if a.shape[-1] * (1 << 14) >= _EXACT_F64:
        raise ValueError(f"GEMM depth {a.shape[-1]} is too large for exact accumulation")
    acc = torch.matmul(a.to(torch.float64), w.to(torch.float64)).to(torch.int64)
    if bias is not None:
        bias = check_int_tensor(bias, "GEMM bias", INT32)
        if bias.shape != (w.shape[-1],):
            raise ValueError(f"GEMM bias must have shape ({w.shape[-1]},), got {tuple(bias.shape)}")
        acc = acc + bias
    lo, hi = int(acc.min()), int(acc.max())
    if lo < INT32.qmin or hi > INT32.qmax:
        raise ValueError(f"GEMM accumulator range [{lo}, {hi}] overflows {ACC_BITS} bits")
    return acc


def gemm(
    a: torch.Tensor,
    w: torch.Tensor,
    bias: torch.Tensor | None,
    mult: torch.Tensor | int,
    shift: torch.Tensor | int,
    out: FixedFormat = INT8,
) -> torch.Tensor:
    """GEMM engine: :func:`gemm_acc` then :func:`~vitforge.quant.fixed.requantize` per output channel.

    Returns ``(..., M, N)`` int64 codes in ``out``.
    """
    return requantize(gemm_acc(a, w, bias), mult, shift, out)


def residual_add(
    a: torch.Tensor,
    b: torch.Tensor,
    mult_a: int,
    mult_b: int,
    shift: int,
    out: FixedFormat = INT8,
) -> torch.Tensor:
    """Residual adder: ``saturate(round_shift(a * mult_a + b * mult_b, shift))``.

    ``a`` and ``b`` are int8 codes at their own scales; ``mult_x / 2**shift`` is each input's
    scale over the output scale. Multipliers are unsigned ``REQUANT_MULT_BITS``-bit.
    """
    a = check_int_tensor(a, "residual input a", INT8)
    b = check_int_tensor(b, "residual input b", INT8)
    if a.shape != b.shape:
        raise ValueError(f"residual inputs differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    check_requant_params(torch.tensor([mult_a, mult_b]), torch.tensor([shift]))
    return saturate(round_shift(a * mult_a + b * mult_b, shift), out)


def softmax_unit(x: torch.Tensor, cfg: NumericsConfig) -> torch.Tensor:
    """The softmax unit at the configured formats: ``(..., n)`` softmax_in -> softmax_out codes."""
    return int_softmax(x, cfg.softmax_in, cfg.softmax_out, cfg.exp_out)


def gelu_unit(x: torch.Tensor, cfg: NumericsConfig) -> torch.Tensor:
    """The GELU unit at the configured formats."""
    return int_gelu(x, cfg.gelu_in, cfg.gelu_out)


def sigmoid_unit(x: torch.Tensor, cfg: NumericsConfig) -> torch.Tensor:
    """The sigmoid unit at the configured formats."""
    return int_sigmoid(x, cfg.sigmoid_in, cfg.sigmoid_out)
