"""Plots of the crossbar experiments (matplotlib, Agg): zero-slice ratios, accuracy against ADC bits and
against the operating point, cost per component."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.tight_layout()
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_zero_ratio(series: dict[str, list[float]], path: Path) -> Path:
    """Zero-slice ratio per slice (LSB first) for each labelled model, as grouped bars."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    n = len(series)
    width = 0.8 / max(n, 1)
    for i, (label, ratios) in enumerate(series.items()):
        xs = [k + (i - (n - 1) / 2) * width for k in range(len(ratios))]
        ax.bar(xs, [100 * r for r in ratios], width, label=label)
    ax.set_xticks(range(max((len(r) for r in series.values()), default=0)))
    ax.set_xlabel("slice (0 = least significant)")
    ax.set_ylabel("zero slices (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def plot_lines(series: dict[str, tuple[list, list[float], list[float] | None]], path: Path, xlabel: str,
               ylabel: str = "top-1 (%)", logx: bool = False) -> Path:
    """Lines ``label -> (x values, y means, y stds or None)``; x values may be strings (categorical)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for label, (xs, ys, err) in series.items():
        pos = list(range(len(xs))) if xs and isinstance(xs[0], str) else xs
        ax.errorbar(pos, ys, yerr=err, marker="o", capsize=3, label=label)
        if xs and isinstance(xs[0], str):
            ax.set_xticks(pos, xs, fontsize=7, rotation=20)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_cost(per_component: dict[str, dict[str, float]], path: Path, title: str = "") -> Path:
    """Area, latency and energy split by component: ``{"area_um2": {comp: v}, "latency_ns": ..., "energy_pj": ...}``."""
    keys = list(per_component)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.2))
    for ax, key in zip(axes, keys, strict=True):
        comps = per_component[key]
        ax.bar(list(comps), list(comps.values()), color=["tab:blue", "tab:orange", "tab:green"][: len(comps)])
        ax.set_title(key, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)
