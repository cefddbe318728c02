"""Plots of the crossbar experiments (matplotlib, Agg): zero-slice ratios, accuracy against ADC bits and
against the operating point, cost per component."""

from __future__ import annotations

import math
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


#: Colors of the sweep's methods in the frontier plot.
METHOD_COLORS = {"l1": "tab:blue", "bitslice-l1": "tab:red"}


def plot_sparsity_frontier(points: list[dict], summary: dict, path: Path, n_slices: int) -> Path:
    """int8 top-1 against zero-slice ratio, overall and per slice, and against the zero-weight fraction.

    ``points`` and ``summary`` are :func:`vitforge.sw.reram.sparsity.run_sweep`'s: filled markers are
    trained (pruned and fine-tuned) models, hollow ones the same models pruned harder afterwards; the
    line is each method's frontier, the star the reference L1. Dashed: its top-1 less ``max_drop``; dotted: twice
    the reference's ratio (or, on the last panel, the zero-weight fraction that twice its overall
    ratio needs), noted in the title when it lies beyond 100%.
    """
    from .sparsity import OVERALL, SWEEP_METHODS, frontier, slice_key

    keys = [OVERALL] + [slice_key(k) for k in range(n_slices)] + ["pruned"]
    cols = 3
    rows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    ref = summary["reference"]
    for ax, key in zip(axes.flat, keys, strict=False):
        for method in SWEEP_METHODS:
            mine = [p for p in points if p["method"] == method]
            if not mine:
                continue
            color = METHOD_COLORS.get(method)
            trained = [p for p in mine if p["threshold"] is None]
            later = [p for p in mine if p["threshold"] is not None]
            ax.scatter([100 * p[key] for p in trained], [p["top1"] for p in trained], color=color, s=22,
                       label=f"{method} (trained)")
            ax.scatter([100 * p[key] for p in later], [p["top1"] for p in later], facecolors="none",
                       edgecolors=color, s=22, label=f"{method} (pruned after)")
            front = frontier(mine, key)
            ax.plot([100 * p[key] for p in front], [p["top1"] for p in front], color=color, lw=1)
        ax.scatter([100 * ref[key]], [ref["top1"]], marker="*", s=110, color="black", zorder=3,
                   label="reference L1")
        ax.axhline(summary["floor"], color="gray", ls="--", lw=1)
        if key == "pruned":
            line = summary["bound"]["pruned_needed"]
            title = "zero weights (code 0)"
            note = "needed for 2x overall" if line is not None else "2x overall: impossible (> 100%)"
        else:
            line = 2 * ref[key]
            title = "all slices" if key == OVERALL else f"slice {key[len('slice'):]}"
            note = f"2x L1 = {100 * line:.1f}%"
        if line is not None and line <= 1:
            ax.axvline(100 * line, color="black", ls=":", lw=1)
        ax.set_title(f"{title}; {note}", fontsize=9)
        ax.set_xlabel("zero (%)" if key == "pruned" else "zero slices (%)")
        ax.set_ylabel("int8 top-1 (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="lower left")
    return _save(fig, path)
