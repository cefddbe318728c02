"""The numeric formats of the datapath: one frozen config that quant/, hw/ and sw/ read."""

from __future__ import annotations

from dataclasses import dataclass, field

from .fixed import FixedFormat, check_bits

_COEF_MAX_FRAC = 16


@dataclass(frozen=True)
class NumericsConfig:
    """Bit widths and fixed-point formats of every unit.

    Activations and weights are symmetric integers with float scales; the nonlinear units work
    on fixed-point formats with power-of-two scales, onto which the preceding requantization maps.

    Attributes:
        act_bits, weight_bits: widths of activations and weights (2..16; the datapath builds 8).
        gelu_in, gelu_out: GELU unit formats.
        softmax_in, softmax_out: softmax unit formats (probabilities in s8.7: 1.0 saturates).
        exp_out: the exp unit's unsigned output format inside softmax.
        sigmoid_in, sigmoid_out: sigmoid unit formats (unsigned output).
        layernorm_out: the normalized LayerNorm output in ``vitforge approx`` (gamma 1, beta 0).
        layernorm_dim: row length used by ``vitforge approx`` for LayerNorm.
    """

    act_bits: int = 8
    weight_bits: int = 8
    gelu_in: FixedFormat = field(default_factory=lambda: FixedFormat(8, 4))
    gelu_out: FixedFormat = field(default_factory=lambda: FixedFormat(8, 4))
    softmax_in: FixedFormat = field(default_factory=lambda: FixedFormat(8, 4))
    softmax_out: FixedFormat = field(default_factory=lambda: FixedFormat(8, 7))
    exp_out: FixedFormat = field(default_factory=lambda: FixedFormat(16, 15, signed=False))
    sigmoid_in: FixedFormat = field(default_factory=lambda: FixedFormat(8, 4))
    sigmoid_out: FixedFormat = field(default_factory=lambda: FixedFormat(8, 8, signed=False))
    layernorm_out: FixedFormat = field(default_factory=lambda: FixedFormat(8, 4))
    layernorm_dim: int = 64

    def __post_init__(self) -> None:
        check_bits(self.act_bits, "act_bits")
        check_bits(self.weight_bits, "weight_bits")
        for name in ("gelu_in", "gelu_out", "softmax_in", "softmax_out", "sigmoid_in", "layernorm_out"):
            fmt = getattr(self, name)
            if not fmt.signed:
                raise ValueError(f"{name} must be a signed format, not {fmt}")
        for name in ("gelu_in", "gelu_out", "softmax_in", "softmax_out", "sigmoid_in", "sigmoid_out",
                     "exp_out", "layernorm_out"):
            fmt = getattr(self, name)
            if fmt.frac > _COEF_MAX_FRAC:
                raise ValueError(f"{name} has {fmt.frac} fractional bits; the units support at most {_COEF_MAX_FRAC}")
        if self.exp_out.signed:
            raise ValueError(f"exp_out must be unsigned, not {self.exp_out}")
        if self.exp_out.qmax < 1 << self.exp_out.frac:
            raise ValueError(f"exp_out {self.exp_out} cannot hold exp(0) = 1.0")
        if self.sigmoid_out.signed:
            raise ValueError(f"sigmoid_out must be unsigned, not {self.sigmoid_out}")
        if self.layernorm_dim < 2:
            raise ValueError(f"layernorm_dim must be at least 2, not {self.layernorm_dim}")


DEFAULT_NUMERICS = NumericsConfig()
