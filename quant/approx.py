"""Accuracy of the integer nonlinear units against the float functions and the I-BERT/PLAN baselines.

Every figure is an error in real units of the output, over the full input range at the
configured formats: every input code for the elementwise units; for the row-wise units
(softmax, LayerNorm), a seeded set of rows that covers the input range (uniform rows, peaked
rows, narrow and wide spreads).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from . import ibert
from .config import NumericsConfig
from .fixed import FixedFormat
from .nonlinear import LN_NORM_FRAC, int_exp, int_gelu, int_layernorm, int_sigmoid, int_softmax

APPROX_FUNCTIONS = ("gelu", "exp", "softmax", "layernorm", "sigmoid")
#: Rows per row-wise function in the report (seeded); more rows only tighten the max.
ROWS = 2048
ROW_LEN = 64


def _errors(approx: torch.Tensor, exact: torch.Tensor) -> tuple[float, float]:
    err = (approx - exact).abs()
    return float(err.max()), float(err.mean())


def _row_inputs(fmt: FixedFormat, rows: int, length: int, seed: int) -> torch.Tensor:
    """Seeded rows covering ``fmt``'s range: uniform, peaked and narrow-spread rows."""
    gen = torch.Generator().manual_seed(seed)
    uniform = torch.randint(fmt.qmin, fmt.qmax + 1, (rows // 2, length), generator=gen)
    centers = torch.randint(fmt.qmin, fmt.qmax + 1, (rows - rows // 2, 1), generator=gen)
    spread = torch.randint(1, 33, (rows - rows // 2, 1), generator=gen)
    noise = torch.randn((rows - rows // 2, length), generator=gen) * spread
    narrow = (centers + noise.round().to(torch.int64)).clamp(fmt.qmin, fmt.qmax)
    return torch.cat([uniform, narrow])


def _report(
    ours: torch.Tensor, ref: torch.Tensor, exact: torch.Tensor, out_fmt: FixedFormat, in_bits: int
) -> dict[str, float | int]:
    max_e, mean_e = _errors(out_fmt.to_real(ours), exact)
    rmax, rmean = _errors(out_fmt.to_real(ref), exact)
    return {
        "max_abs_err": max_e,
        "mean_abs_err": mean_e,
        "ref_max_abs_err": rmax,
        "ref_mean_abs_err": rmean,
        "input_bits": in_bits,
        "output_bits": out_fmt.bits,
    }


def _gelu(cfg: NumericsConfig) -> dict:
    x = cfg.gelu_in.codes()
    xr = cfg.gelu_in.to_real(x)
    exact = 0.5 * xr * (1 + torch.erf(xr / math.sqrt(2)))
    return _report(
        int_gelu(x, cfg.gelu_in, cfg.gelu_out), ibert.ibert_gelu(x, cfg.gelu_in, cfg.gelu_out), exact,
        cfg.gelu_out, cfg.gelu_in.bits,
    )


def _exp(cfg: NumericsConfig) -> dict:
    d_fmt = FixedFormat(cfg.softmax_in.bits + 1, cfg.softmax_in.frac)
    d = torch.arange(d_fmt.qmin + 1, 1, dtype=torch.int64)  # x - max(x) of two inputs: [-2**bits + 1, 0]
    exact = torch.exp(d_fmt.to_real(d))
    return _report(
        int_exp(d, d_fmt, cfg.exp_out), ibert.ibert_exp(d, d_fmt, cfg.exp_out), exact, cfg.exp_out, d_fmt.bits
    )


def _softmax(cfg: NumericsConfig, seed: int) -> dict:
    x = _row_inputs(cfg.softmax_in, ROWS, ROW_LEN, seed)
    exact = torch.softmax(cfg.softmax_in.to_real(x), dim=-1)
    return _report(
        int_softmax(x, cfg.softmax_in, cfg.softmax_out, cfg.exp_out),
        ibert.ibert_softmax(x, cfg.softmax_in, cfg.softmax_out, cfg.exp_out),
        exact, cfg.softmax_out, cfg.softmax_in.bits,
    )


def _layernorm(cfg: NumericsConfig, seed: int) -> dict:
    int8 = FixedFormat(cfg.act_bits, 0)
    x = _row_inputs(int8, ROWS, cfg.layernorm_dim, seed)
    xr = x.to(torch.float64)
    exact = torch.nn.functional.layer_norm(xr, xr.shape[-1:], eps=1e-12)
    out = cfg.layernorm_out
    dim = cfg.layernorm_dim
    # gamma = 1 at scale 1, beta = 0: requantize Q.LN_NORM_FRAC to the output format.
    ours = int_layernorm(
        x, torch.ones(dim, dtype=torch.int64), torch.zeros(dim, dtype=torch.int64),
        mult=1 << 15, shift=15 + LN_NORM_FRAC - out.frac, out_fmt=out, eps_q=0,
    )
    return _report(ours, ibert.ibert_layernorm(x, out), exact, out, cfg.act_bits)


def _sigmoid(cfg: NumericsConfig) -> dict:
    x = cfg.sigmoid_in.codes()
    exact = torch.sigmoid(cfg.sigmoid_in.to_real(x))
    return _report(
        int_sigmoid(x, cfg.sigmoid_in, cfg.sigmoid_out), ibert.plan_sigmoid(x, cfg.sigmoid_in, cfg.sigmoid_out),
        exact, cfg.sigmoid_out, cfg.sigmoid_in.bits,
    )


def approx_report(cfg: NumericsConfig, seed: int = 0) -> dict[str, dict]:
    """Error figures per function (keys :data:`APPROX_FUNCTIONS`); see the module docstring."""
    runners: dict[str, Callable[[], dict]] = {
        "gelu": lambda: _gelu(cfg),
        "exp": lambda: _exp(cfg),
        "softmax": lambda: _softmax(cfg, seed),
        "layernorm": lambda: _layernorm(cfg, seed),
        "sigmoid": lambda: _sigmoid(cfg),
    }
    return {name: runners[name]() for name in APPROX_FUNCTIONS}
