"""Symmetric quantization of float tensors: calibration rules, quantize, dequantize.

``q = saturate(floor(x / scale + 1/2))`` with the symmetric range ``[-(2**(b-1)-1), 2**(b-1)-1]``
(the most negative code is never produced, so negation never overflows). Scales are per tensor
(``axis=None``) or per channel along ``axis`` (``axis=0`` for a ``(out, in)`` weight: per output
channel).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from .fixed import check_bits

#: Smallest scale given to an all-zero tensor or channel (any scale represents it exactly).
MIN_SCALE = 2.0**-24

CalibRule = Literal["max", "percentile"]


def _check_float(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, not {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, not {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); cannot quantize or calibrate it")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} holds non-finite values (nan or inf)")


def check_scale(scale: torch.Tensor | float, name: str = "scale") -> torch.Tensor:
    """Check that every scale is finite and positive; return a float64 tensor."""
    s = torch.as_tensor(scale, dtype=torch.float64)
    if s.numel() == 0:
        raise ValueError(f"{name} is empty")
    bad = ~torch.isfinite(s) | (s <= 0)
    if bool(bad.any()):
        raise ValueError(f"{name} must be finite and positive, got {s[bad].flatten()[0].item()!r}")
    return s


def qmax_of(bits: int) -> int:
    """Largest code of the symmetric ``bits``-bit range."""
    return (1 << (check_bits(bits) - 1)) - 1


def _reduce_dims(x: torch.Tensor, axis: int | None) -> list[int]:
    if axis is None:
        return list(range(x.dim()))
    if not -x.dim() <= axis < x.dim():
        raise ValueError(f"axis {axis} is out of range for a tensor of shape {tuple(x.shape)}")
    axis %= x.dim()
    return [d for d in range(x.dim()) if d != axis]


def calibrate_scale(
    x: torch.Tensor,
    *,
    bits: int = 8,
    rule: CalibRule = "max",
    percentile: float = 99.99,
    axis: int | None = None,
) -> torch.Tensor:
    """Symmetric scale(s) that map the calibration data onto ``bits`` bits.

    Args:
        x: float calibration data.
        bits: target width, 2..16.
        rule: ``"max"`` (scale = max|x| / qmax) or ``"percentile"`` (scale = the
            ``percentile``-th percentile of |x| / qmax: clips rare outliers).
        percentile: in (0, 100], for ``rule="percentile"``.
        axis: None for one scale, or the channel axis for one scale per channel.

    Returns:
        float64 scale: ``()`` per tensor or ``(x.shape[axis],)`` per channel.
    """
    _check_float(x, "calibration data")
    qmax = qmax_of(bits)
    dims = _reduce_dims(x, axis)
    mag = x.detach().abs().to(torch.float64)
    if rule == "max":
        amax = mag.amax(dim=dims) if dims else mag
    elif rule == "percentile":
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100], not {percentile!r}")
        if axis is None:
            amax = torch.quantile(mag.flatten(), percentile / 100.0)
        else:
            moved = mag.movedim(axis % x.dim(), 0).reshape(x.shape[axis], -1)
            amax = torch.quantile(moved, percentile / 100.0, dim=1)
    else:
        raise ValueError(f"calibration rule must be 'max' or 'percentile', not {rule!r}")
    return torch.clamp(amax / qmax, min=MIN_SCALE)


def _broadcast(scale: torch.Tensor, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    if axis is None:
        if scale.dim() != 0:
            raise ValueError(f"per-tensor scale must be a scalar, got shape {tuple(scale.shape)}")
        return scale
    axis %= x.dim()
    if scale.shape != (x.shape[axis],):
        raise ValueError(
            f"per-channel scale must have shape ({x.shape[axis]},) for axis {axis}, got {tuple(scale.shape)}"
        )
    shape = [1] * x.dim()
    shape[axis] = -1
    return scale.reshape(shape)


def quantize(
    x: torch.Tensor, scale: torch.Tensor | float, *, bits: int = 8, axis: int | None = None
) -> torch.Tensor:
    """Float to symmetric integer codes, rounding half up and saturating.

    Args:
        x: float tensor.
        scale: positive finite scale, ``()`` or ``(x.shape[axis],)``.
        bits: 2..16.
        axis: channel axis of a per-channel scale.

    Returns:
        int64 codes in ``[-qmax, qmax]``.
    """
    _check_float(x, "x")
    qmax = qmax_of(bits)
    s = _broadcast(check_scale(scale), x, axis)
    q = torch.floor(x.to(torch.float64) / s + 0.5)
    return torch.clamp(q, -qmax, qmax).to(torch.int64)


def dequantize(q: torch.Tensor, scale: torch.Tensor | float, *, axis: int | None = None) -> torch.Tensor:
    """Integer codes to float64 values ``q * scale``."""
    if q.is_floating_point():
        raise TypeError(f"codes must be an integer tensor, not {q.dtype}")
    s = _broadcast(check_scale(scale), q, axis)
    return q.to(torch.float64) * s


def pow2_scale(scale: float) -> int:
    """Fractional bits of the power-of-two scale nearest above ``scale`` (``2**-frac >= scale``)."""
    s = float(check_scale(scale))
    return -math.ceil(math.log2(s))
