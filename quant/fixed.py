"""Fixed-point formats, rounding, saturation and requantization: the integer contract.

Every integer operation in vitforge (the reference here, the Amaranth datapath, the golden
model, the RTL runtime) rounds and saturates as this module says:

* **Rounding** is *round half up*: ``round_shift(x, s) = (x + 2**(s-1)) >> s`` with an
  arithmetic (flooring) shift, i.e. ``floor(x / 2**s + 1/2)``. It is what an adder and a
  shifter give in hardware; ties go towards +inf (-2.5 -> -2, 2.5 -> 3).
* **Saturation** clamps to the output format's range; nothing wraps.
* **Requantization** of an int32 accumulator is ``saturate(round_shift(acc * mult, shift))``
  with ``mult`` an unsigned ``REQUANT_MULT_BITS``-bit integer and ``0 <= shift <=
  REQUANT_MAX_SHIFT``. ``acc * mult`` fits 48 bits, so it is exact in int64.

All functions take integer tensors and return ``torch.int64`` tensors holding values in the
stated range; dtype, range and argument errors raise ``ValueError``/``TypeError`` naming the
value and what would be valid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

#: Width of the unsigned requantization multiplier (one DSP48E2 B-port fits 18 bits).
REQUANT_MULT_BITS = 16
#: Largest requantization right shift (acc 32 bits x multiplier 16 bits = 48-bit product).
REQUANT_MAX_SHIFT = 47
#: Width of the GEMM accumulators.
ACC_BITS = 32
#: Supported range of bit widths for quantized tensors (weights and activations).
MIN_QUANT_BITS, MAX_QUANT_BITS = 2, 16

_INT_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)


@dataclass(frozen=True)
class FixedFormat:
    """A two's-complement (or unsigned) fixed-point format: ``real = code * 2**-frac``.

    Args:
        bits: total width in bits, 1..48.
        frac: fractional bits (the binary point position), 0..bits+16.
        signed: two's complement if True, unsigned otherwise.
    """

    bits: int
    frac: int
    signed: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or not 1 <= self.bits <= 48:
            raise ValueError(f"fixed-point bits must be an integer in 1..48, not {self.bits!r}")
        if not isinstance(self.frac, int) or not 0 <= self.frac <= self.bits + 16:
            raise ValueError(f"fixed-point frac must be an integer in 0..{self.bits + 16}, not {self.frac!r}")

    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def scale(self) -> float:
        """The real value of one code step, ``2**-frac``."""
        return 2.0**-self.frac

    def codes(self) -> torch.Tensor:
        """Every code of the format, ascending: ``(2**bits,) int64``."""
        return torch.arange(self.qmin, self.qmax + 1, dtype=torch.int64)

    def to_real(self, q: torch.Tensor) -> torch.Tensor:
        """Codes to real values, float64."""
        return q.to(torch.float64) * self.scale

    def from_real(self, x: torch.Tensor) -> torch.Tensor:
        """Real values to codes, rounding half up and saturating: int64."""
        return saturate(torch.floor(x.to(torch.float64) / self.scale + 0.5).to(torch.int64), self)

    def __str__(self) -> str:
        kind = "s" if self.signed else "u"
        return f"{kind}{self.bits}.{self.frac}"


#: The 8-bit signed integer format of activations and weights (scale kept separately).
INT8 = FixedFormat(8, 0)
INT32 = FixedFormat(32, 0)


def check_int_tensor(x: torch.Tensor, name: str, fmt: FixedFormat | None = None) -> torch.Tensor:
    """Check that ``x`` is a non-empty integer tensor (optionally within ``fmt``); return it as int64."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, not {type(x).__name__}")
    if x.dtype not in _INT_DTYPES:
        raise TypeError(f"{name} must be an integer tensor (int8/uint8/int16/int32/int64), not {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}); integer operations need at least one element")
    x = x.to(torch.int64)
    if fmt is not None:
        lo, hi = int(x.min()), int(x.max())
        if lo < fmt.qmin or hi > fmt.qmax:
            raise ValueError(
                f"{name} holds values in [{lo}, {hi}], outside the {fmt} range [{fmt.qmin}, {fmt.qmax}]"
            )
    return x


def check_bits(bits: int, name: str = "bits") -> int:
    """Check a quantization bit width against the supported range."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_QUANT_BITS <= bits <= MAX_QUANT_BITS:
        raise ValueError(f"{name} must be an integer in {MIN_QUANT_BITS}..{MAX_QUANT_BITS}, not {bits!r}")
    return bits


def int_format(bits: int, signed: bool = True) -> FixedFormat:
    """The integer format of a quantized tensor with ``bits`` bits (checked)."""
    return FixedFormat(check_bits(bits), 0, signed)


def saturate(x: torch.Tensor, fmt: FixedFormat) -> torch.Tensor:
    """Clamp ``x`` to the range of ``fmt``."""
    return torch.clamp(x, fmt.qmin, fmt.qmax)


def round_shift(x: torch.Tensor, shift: torch.Tensor | int) -> torch.Tensor:
    """``floor(x / 2**shift + 1/2)``: arithmetic right shift with round half up.

    Args:
        x: int64 tensor.
        shift: non-negative shift(s), broadcastable to ``x``; 0 leaves ``x`` unchanged.
    """
    shift_t = torch.as_tensor(shift, dtype=torch.int64)
    if bool((shift_t < 0).any()) or bool((shift_t > 62).any()):
        raise ValueError(f"shift must be in 0..62, got {shift_t.min().item()}..{shift_t.max().item()}")
    half = torch.where(shift_t > 0, torch.ones_like(shift_t) << (shift_t - 1).clamp(min=0), 0)
    return (x + half) >> shift_t


def requantize(
    acc: torch.Tensor,
    mult: torch.Tensor | int,
    shift: torch.Tensor | int,
    out: FixedFormat = INT8,
) -> torch.Tensor:
    """Requantize accumulators: ``saturate(round_shift(acc * mult, shift), out)``.

    Args:
        acc: ``(..., channels)`` integer accumulators within int32.
        mult: unsigned ``REQUANT_MULT_BITS``-bit multiplier, a scalar or ``(channels,)`` per channel.
        shift: right shift in ``0..REQUANT_MAX_SHIFT``, a scalar or ``(channels,)``.
        out: output format (int8 by default).

    Returns:
        ``(..., channels) int64`` within ``out``.
    """
    acc = check_int_tensor(acc, "acc", INT32)
    mult_t = torch.as_tensor(mult, dtype=torch.int64)
    shift_t = torch.as_tensor(shift, dtype=torch.int64)
    check_requant_params(mult_t, shift_t)
    return saturate(round_shift(acc * mult_t, shift_t), out)


def check_requant_params(mult: torch.Tensor, shift: torch.Tensor) -> None:
    """Check requantization multipliers and shifts against the hardware's widths."""
    mmax = (1 << REQUANT_MULT_BITS) - 1
    if mult.numel() == 0 or bool((mult < 0).any()) or bool((mult > mmax).any()):
        raise ValueError(f"requant multiplier must be in 0..{mmax}, got {mult.tolist()}")
    if shift.numel() == 0 or bool((shift < 0).any()) or bool((shift > REQUANT_MAX_SHIFT).any()):
        raise ValueError(f"requant shift must be in 0..{REQUANT_MAX_SHIFT}, got {shift.tolist()}")


def quantize_multiplier(real: float) -> tuple[int, int]:
    """Approximate a positive real ratio by ``mult * 2**-shift`` for :func:`requantize`.

    The multiplier is normalized to ``[2**(B-1), 2**B)`` (``B = REQUANT_MULT_BITS``) for full
    precision; ratios too small for that within ``REQUANT_MAX_SHIFT`` get a smaller multiplier.

    Raises:
        ValueError: ``real`` is not finite, not positive, too large (>= 2**B) or so small that
            the multiplier would be 0.
    """
    if not isinstance(real, (int, float)) or not math.isfinite(real) or real <= 0:
        raise ValueError(f"requantization ratio must be a finite positive number, not {real!r}")
    mant, exp = math.frexp(real)  # real = mant * 2**exp, mant in [0.5, 1)
    mult = round(mant * (1 << REQUANT_MULT_BITS))
    shift = REQUANT_MULT_BITS - exp
    if mult == 1 << REQUANT_MULT_BITS:
        mult, shift = mult >> 1, shift - 1
    if shift < 0:
        raise ValueError(
            f"requantization ratio {real!r} is too large: it must be below {2.0**REQUANT_MULT_BITS}"
        )
    if shift > REQUANT_MAX_SHIFT:
        mult = round(real * 2.0**REQUANT_MAX_SHIFT)
        shift = REQUANT_MAX_SHIFT
        if mult == 0:
            raise ValueError(
                f"requantization ratio {real!r} is too small: below 2**-{REQUANT_MAX_SHIFT + 1} every output is 0"
            )
    return int(mult), int(shift)
