"""Fake-quant modules for quantization-aware training (straight-through estimators).

Quantized modules pass ``(value, scale)`` pairs: ``value`` is a float tensor holding
``codes * scale`` exactly, ``scale`` a float (None in float mode). Each module has a ``mode``:

* ``"float"``: plain float computation (``value``, None); nonlinearities are the exact float
  functions or, with ``poly=True``, quant/'s float twins.
* ``"calibrate"``: float computation while observers record activation ranges.
* ``"qat"``: the forward **value** is the integer path (quant/'s reference ops on the codes,
  dequantized), the **gradient** is that of the float twin (straight-through). Train and eval
  forwards are therefore both bit-identical to the integer path; scales are frozen.

Codes are recovered from values with ``round(value / scale)``: exact, since ``|code| <= 2**15``
and float32 keeps 24 bits. Set the mode of a whole model with :func:`set_mode`.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from . import nonlinear as nl
from .config import DEFAULT_NUMERICS, NumericsConfig
from .fixed import INT32, FixedFormat, check_bits, quantize_multiplier, requantize
from .ops import gemm_acc, residual_add
from .quantize import MIN_SCALE, calibrate_scale, qmax_of, quantize

Mode = Literal["float", "calibrate", "qat"]
MODES = ("float", "calibrate", "qat")
#: Momentum of the percentile observer's moving average.
OBSERVER_MOMENTUM = 0.9


def set_mode(model: nn.Module, mode: Mode) -> None:
    """Set the quantization mode of every fake-quant module in ``model``."""
    if mode not in MODES:
        raise ValueError(f"quantization mode must be one of {MODES}, not {mode!r}")
    for m in model.modules():
        if isinstance(m, QuantModule):
            m.mode = mode


def ste(value: torch.Tensor, twin: torch.Tensor | None) -> torch.Tensor:
    """Forward ``value``, backward the gradient of ``twin`` (``None``: no gradient is asked for,
    :func:`wants_twin`; ``value`` itself)."""
    if twin is None:
        return value
    return twin + (value.to(twin.dtype) - twin).detach()


def wants_twin(quantized: bool) -> bool:
    """Whether a forward needs its float twin: always unquantized (the twin is the value), and
    quantized only where autograd records (the twin carries the gradient). Under ``torch.no_grad``
    (calibration, validation checks, evaluation) a quantized unit skips it: its value is the
    integer result either way, and the codes downstream are the same
    (tests/sw/test_vit.py)."""
    return not quantized or torch.is_grad_enabled()


def codes_of(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Integer codes of a fake-quantized value (exact; see the module docstring)."""
    return torch.round(x.detach().to(torch.float64) / scale).to(torch.int64)


class QuantModule(nn.Module):
    """Base of the fake-quant modules: holds the mode."""

    def __init__(self) -> None:
        super().__init__()
        self.mode: Mode = "float"

    @property
    def quantized(self) -> bool:
        return self.mode == "qat"


class Observer(QuantModule):
    """Calibrates one per-tensor activation scale (``max`` or moving-average ``percentile``).

    The scale is frozen outside ``"calibrate"`` mode; an observer that never saw data refuses
    to quantize.
    """

    def __init__(self, *, bits: int = 8, rule: str = "max", percentile: float = 99.99) -> None:
        super().__init__()
        self.bits = check_bits(bits)
        if rule not in ("max", "percentile"):
            raise ValueError(f"calibration rule must be 'max' or 'percentile', not {rule!r}")
        self.rule = rule
        self.percentile = percentile
        self.register_buffer("amax", torch.zeros((), dtype=torch.float64))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))

    def observe(self, x: torch.Tensor) -> None:
        if self.mode != "calibrate":
            return
        s = calibrate_scale(x.detach(), bits=self.bits, rule=self.rule, percentile=self.percentile)
        amax = s * qmax_of(self.bits)
        if self.rule == "max" or not bool(self.seen):
            self.amax.copy_(torch.maximum(self.amax, amax) if self.rule == "max" else amax)
        else:
            self.amax.mul_(OBSERVER_MOMENTUM).add_((1 - OBSERVER_MOMENTUM) * amax)
        self.seen.fill_(True)

    @property
    def scale(self) -> float:
        if not bool(self.seen):
            raise RuntimeError("observer has no calibration data: run the model in 'calibrate' mode first")
        return max(float(self.amax) / qmax_of(self.bits), MIN_SCALE)

    def fake_quant(self, x: torch.Tensor) -> torch.Tensor:
        """STE quantize-dequantize with the frozen scale."""
        s = self.scale
        return ste(quantize(x.detach(), s, bits=self.bits).to(x.dtype) * s, x)


class QuantAct(QuantModule):
    """Quantizes a float activation to ``bits``-bit codes: the model's input quantizer."""

    def __init__(self, *, bits: int = 8, rule: str = "max") -> None:
        super().__init__()
        self.observer = Observer(bits=bits, rule=rule)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, float | None]:
        self.observer.observe(x)
        if not self.quantized:
            return x, None
        return self.observer.fake_quant(x), self.observer.scale


class _Requant(QuantModule):
    """Output side shared by the GEMM-like modules: calibrated scale or a fixed format."""

    def __init__(self, out_fmt: FixedFormat | None, bits: int) -> None:
        super().__init__()
        self.out_fmt = out_fmt
        self.out_observer = Observer(bits=bits)

    @property
    def out_scale(self) -> float:
        return self.out_fmt.scale if self.out_fmt is not None else self.out_observer.scale

    @property
    def out_range(self) -> FixedFormat:
        """The output codes' range: the fixed format, or the full signed ``bits``-bit range
        (requantization saturates to [-2**(b-1), 2**(b-1)-1])."""
        return self.out_fmt if self.out_fmt is not None else FixedFormat(self.out_observer.bits, 0)


class QuantLinear(_Requant):
    """Linear layer with per-output-channel int8 weights, int32 bias and requantized output.

    Integer path: ``requantize(gemm_acc(x_q, w_q.T, b_q), mult, shift)`` with
    ``mult * 2**-shift ~ s_in * s_w[c] / s_out`` per output channel.

    Args:
        in_features, out_features: sizes.
        bias: with a bias.
        out_fmt: a fixed output format (e.g. the GELU unit's input), else a calibrated scale.
        bits: activation width (the datapath builds 8).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias: bool = True,
        out_fmt: FixedFormat | None = None,
        bits: int = 8,
    ) -> None:
        super().__init__(out_fmt, bits)
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.bits = bits

    @property
    def weight(self) -> nn.Parameter:
        return self.linear.weight

    def weight_scale(self) -> torch.Tensor:
        """Per-output-channel weight scales, ``(out_features,)`` float64 (max rule)."""
        return calibrate_scale(self.linear.weight.detach(), bits=self.bits, rule="max", axis=0)

    def integer_params(self, in_scale: float) -> dict[str, torch.Tensor]:
        """The hardware's view: ``w`` ``(out, in)`` int codes, ``b`` int32 codes, ``mult``/``shift``
        per output channel, for an input at ``in_scale``."""
        s_w = self.weight_scale()
        w_q = quantize(self.linear.weight.detach(), s_w, bits=self.bits, axis=0)
        acc_scale = in_scale * s_w
        if self.linear.bias is not None:
            b = torch.floor(self.linear.bias.detach().to(torch.float64) / acc_scale + 0.5)
            b_q = b.clamp(INT32.qmin, INT32.qmax).to(torch.int64)
        else:
            b_q = torch.zeros(self.linear.out_features, dtype=torch.int64)
        pairs = [quantize_multiplier(float(r)) for r in acc_scale / self.out_scale]
        mult = torch.tensor([p[0] for p in pairs], dtype=torch.int64)
        shift = torch.tensor([p[1] for p in pairs], dtype=torch.int64)
        return {"w": w_q, "b": b_q, "mult": mult, "shift": shift}

    def forward(self, x: torch.Tensor, in_scale: float | None) -> tuple[torch.Tensor, float | None]:
        if not self.quantized:
            y = self.linear(x)
            self.out_observer.observe(y)
            return y, None
        if in_scale is None:
            raise ValueError("QuantLinear in 'qat' mode needs a quantized input (in_scale is None)")
        s_w = self.weight_scale().to(x.dtype)
        w_fq = ste(quantize(self.linear.weight.detach(), s_w, bits=self.bits, axis=0).to(x.dtype) * s_w[:, None],
                   self.linear.weight)
        twin = nn.functional.linear(x, w_fq, self.linear.bias)
        p = self.integer_params(in_scale)
        q = requantize(gemm_acc(codes_of(x, in_scale), p["w"].T, p["b"]), p["mult"], p["shift"], self.out_range)
        return ste(q.to(x.dtype) * self.out_scale, twin), self.out_scale


class QuantMatMul(_Requant):
    """Activation x activation product (``Q K^T``, ``attn V``) with a per-tensor requantization."""

    def __init__(self, *, out_fmt: FixedFormat | None = None, bits: int = 8, gain: float = 1.0) -> None:
        super().__init__(out_fmt, bits)
        self.gain = gain  # a constant folded into the requantization (e.g. 1/sqrt(d) for Q K^T)

    def requant_params(self, a_scale: float, b_scale: float) -> tuple[int, int]:
        return quantize_multiplier(a_scale * b_scale * self.gain / self.out_scale)

    def forward(
        self, a: torch.Tensor, a_scale: float | None, b: torch.Tensor, b_scale: float | None
    ) -> tuple[torch.Tensor, float | None]:
        twin = torch.matmul(a, b) * self.gain
        if not self.quantized:
            self.out_observer.observe(twin)
            return twin, None
        if a_scale is None or b_scale is None:
            raise ValueError("QuantMatMul in 'qat' mode needs quantized inputs")
        mult, shift = self.requant_params(a_scale, b_scale)
        q = requantize(gemm_acc(codes_of(a, a_scale), codes_of(b, b_scale)), mult, shift, self.out_range)
        return ste(q.to(a.dtype) * self.out_scale, twin), self.out_scale


class QuantAdd(_Requant):
    """Residual add of two quantized tensors into a calibrated output scale."""

    def __init__(self, *, bits: int = 8) -> None:
        super().__init__(None, bits)

    def requant_params(self, a_scale: float, b_scale: float) -> tuple[int, int, int]:
        """``(mult_a, mult_b, shift)`` with one shared shift for both inputs."""
        ma, sa = quantize_multiplier(a_scale / self.out_scale)
        mb, sb = quantize_multiplier(b_scale / self.out_scale)
        shift = min(sa, sb)
        return ma >> (sa - shift), mb >> (sb - shift), shift

    def forward(
        self, a: torch.Tensor, a_scale: float | None, b: torch.Tensor, b_scale: float | None
    ) -> tuple[torch.Tensor, float | None]:
        twin = a + b
        if not self.quantized:
            self.out_observer.observe(twin)
            return twin, None
        if a_scale is None or b_scale is None:
            raise ValueError("QuantAdd in 'qat' mode needs quantized inputs")
        ma, mb, shift = self.requant_params(a_scale, b_scale)
        q = residual_add(codes_of(a, a_scale), codes_of(b, b_scale), ma, mb, shift, self.out_range)
        return ste(q.to(a.dtype) * self.out_scale, twin), self.out_scale


def _check_fixed_input(in_scale: float | None, fmt: FixedFormat, unit: str) -> None:
    if in_scale is None or not math.isclose(in_scale, fmt.scale, rel_tol=0, abs_tol=0):
        raise ValueError(
            f"{unit} in 'qat' mode takes inputs in its fixed format {fmt} (scale {fmt.scale}), got scale {in_scale}"
        )


class _ElementwiseUnit(QuantModule):
    """An elementwise unit with fixed input/output formats (``numerics.<unit>_in/_out``).

    Subclasses name the unit and give its integer function, its float twin (``poly=True``) and
    the exact float function (``poly=False``).
    """

    unit: str

    def __init__(self, numerics: NumericsConfig = DEFAULT_NUMERICS, *, poly: bool = True) -> None:
        super().__init__()
        self.numerics = numerics
        self.poly = poly

    def int_fn(self, q: torch.Tensor, in_fmt: FixedFormat, out_fmt: FixedFormat) -> torch.Tensor:
        raise NotImplementedError

    def twin_fn(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def exact_fn(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, in_scale: float | None) -> tuple[torch.Tensor, float | None]:
        twin = None
        if wants_twin(self.quantized):
            twin = self.twin_fn(x) if self.poly else self.exact_fn(x)
        if not self.quantized:
            return twin, None
        in_fmt = getattr(self.numerics, f"{self.unit}_in")
        out_fmt = getattr(self.numerics, f"{self.unit}_out")
        _check_fixed_input(in_scale, in_fmt, self.unit)
        q = self.int_fn(codes_of(x, in_fmt.scale), in_fmt, out_fmt)
        return ste(q.to(x.dtype) * out_fmt.scale, twin), out_fmt.scale


class QuantGELU(_ElementwiseUnit):
    """GELU unit: input in ``numerics.gelu_in``, output in ``numerics.gelu_out``."""

    unit = "gelu"

    def int_fn(self, q, in_fmt, out_fmt):
        return nl.int_gelu(q, in_fmt, out_fmt)

    def twin_fn(self, x):
        return nl.float_gelu(x)

    def exact_fn(self, x):
        return nn.functional.gelu(x)


class QuantSigmoid(_ElementwiseUnit):
    """Sigmoid unit: input in ``numerics.sigmoid_in``, output in ``numerics.sigmoid_out``."""

    unit = "sigmoid"

    def int_fn(self, q, in_fmt, out_fmt):
        return nl.int_sigmoid(q, in_fmt, out_fmt)

    def twin_fn(self, x):
        return nl.float_sigmoid(x)

    def exact_fn(self, x):
        return torch.sigmoid(x)


class QuantSoftmax(QuantModule):
    """Row-wise softmax unit over the last dim: ``numerics.softmax_in`` -> ``numerics.softmax_out``.

    ``mask`` (training only, bool, broadcastable, True = keep) removes columns the way pruned
    tokens are removed at inference; it is not supported in ``"qat"`` mode, where pruned tokens
    are physically gone.
    """

    def __init__(self, numerics: NumericsConfig = DEFAULT_NUMERICS, *, poly: bool = True) -> None:
        super().__init__()
        self.numerics = numerics
        self.poly = poly

    def forward(
        self, x: torch.Tensor, in_scale: float | None, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, float | None]:
        if mask is not None:
            x_masked = x.masked_fill(~mask, -1e4)
        else:
            x_masked = x
        twin = None
        if wants_twin(self.quantized):
            twin = nl.float_softmax(x_masked) if self.poly else torch.softmax(x_masked, dim=-1)
        if not self.quantized:
            return twin, None
        if mask is not None:
            raise ValueError("QuantSoftmax in 'qat' mode takes no mask: remove pruned tokens instead")
        n = self.numerics
        _check_fixed_input(in_scale, n.softmax_in, "softmax")
        q = nl.int_softmax(codes_of(x, n.softmax_in.scale), n.softmax_in, n.softmax_out, n.exp_out)
        return ste(q.to(x.dtype) * n.softmax_out.scale, twin), n.softmax_out.scale


class QuantLayerNorm(_Requant):
    """LayerNorm unit with int8 gamma (per tensor), int32 beta and a requantized output.

    Integer path: :func:`~vitforge.quant.nonlinear.int_layernorm`. In float/calibrate mode it
    is ``torch.nn.functional.layer_norm``.
    """

    def __init__(self, dim: int, *, eps: float = 1e-6, bits: int = 8) -> None:
        super().__init__(None, bits)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.bits = bits

    def integer_params(self, in_scale: float) -> dict[str, torch.Tensor | int]:
        """``gamma`` int8 codes, ``beta`` int32 codes, ``mult``/``shift``, ``eps_q``."""
        gamma = self.norm.weight.detach()
        s_g = float(calibrate_scale(gamma, bits=self.bits, rule="max"))
        g_q = quantize(gamma, s_g, bits=self.bits)
        acc_scale = s_g * 2.0**-nl.LN_NORM_FRAC
        b = torch.floor(self.norm.bias.detach().to(torch.float64) / acc_scale + 0.5)
        b_q = b.clamp(INT32.qmin, INT32.qmax).to(torch.int64)
        mult, shift = quantize_multiplier(acc_scale / self.out_scale)
        dim = self.norm.normalized_shape[0]
        eps_q = round(self.norm.eps * dim**3 / in_scale**2)
        return {"gamma": g_q, "beta": b_q, "mult": mult, "shift": shift, "eps_q": eps_q}

    def forward(self, x: torch.Tensor, in_scale: float | None) -> tuple[torch.Tensor, float | None]:
        twin = self.norm(x)
        if not self.quantized:
            self.out_observer.observe(twin)
            return twin, None
        if in_scale is None:
            raise ValueError("QuantLayerNorm in 'qat' mode needs a quantized input (in_scale is None)")
        p = self.integer_params(in_scale)
        q = nl.int_layernorm(
            codes_of(x, in_scale), p["gamma"], p["beta"], p["mult"], p["shift"], self.out_range, p["eps_q"]
        )
        return ste(q.to(x.dtype) * self.out_scale, twin), self.out_scale
