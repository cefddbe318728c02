"""Plots of the integer nonlinear units against the float functions and the I-BERT/PLAN baselines."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from . import ibert
from .config import NumericsConfig
from .fixed import FixedFormat
from .nonlinear import int_exp, int_gelu, int_sigmoid


def plot_approx(cfg: NumericsConfig, path: Path) -> Path:
    """Write a PNG with, per elementwise unit, the float function, vitforge's unit and the
    baseline (top row), and their absolute errors (bottom row). Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d_fmt = FixedFormat(cfg.softmax_in.bits + 1, cfg.softmax_in.frac)
    d = torch.arange(d_fmt.qmin + 1, 1, dtype=torch.int64)
    units = [
        ("GELU", cfg.gelu_in, cfg.gelu_in.codes(), cfg.gelu_out,
         lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
         lambda q: int_gelu(q, cfg.gelu_in, cfg.gelu_out), lambda q: ibert.ibert_gelu(q, cfg.gelu_in, cfg.gelu_out),
         "I-BERT"),
        ("exp (x <= 0)", d_fmt, d, cfg.exp_out, torch.exp,
         lambda q: int_exp(q, d_fmt, cfg.exp_out), lambda q: ibert.ibert_exp(q, d_fmt, cfg.exp_out), "I-BERT"),
        ("sigmoid", cfg.sigmoid_in, cfg.sigmoid_in.codes(), cfg.sigmoid_out, torch.sigmoid,
         lambda q: int_sigmoid(q, cfg.sigmoid_in, cfg.sigmoid_out),
         lambda q: ibert.plan_sigmoid(q, cfg.sigmoid_in, cfg.sigmoid_out), "PLAN"),
    ]
    fig, axes = plt.subplots(2, len(units), figsize=(4.2 * len(units), 6.5), squeeze=False)
    for col, (title, in_fmt, q, out_fmt, exact_fn, ours_fn, ref_fn, ref_name) in enumerate(units):
        x = in_fmt.to_real(q)
        exact = exact_fn(x)
        ours, ref = out_fmt.to_real(ours_fn(q)), out_fmt.to_real(ref_fn(q))
        top, bottom = axes[0][col], axes[1][col]
        top.plot(x, exact, "k-", lw=1, label="float")
        top.plot(x, ours, "C0.", ms=2, label="vitforge")
        top.plot(x, ref, "C3.", ms=2, label=ref_name)
        top.set_title(f"{title}: {in_fmt} -> {out_fmt}")
        top.legend(fontsize=8)
        bottom.semilogy(x, (ours - exact).abs().clamp(min=1e-7), "C0.", ms=2, label="vitforge")
        bottom.semilogy(x, (ref - exact).abs().clamp(min=1e-7), "C3.", ms=2, label=ref_name)
        bottom.axhline(out_fmt.scale / 2, color="gray", ls="--", lw=1, label="half output LSB")
        bottom.set_xlabel("input")
        bottom.set_ylabel("|error|")
        bottom.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
