"""Plots of a comparison: hypervolume against cost, and the Pareto fronts (matplotlib, Agg)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .metrics import hv_at
from .problem import TOP_FIDELITY, Problem

GRID_POINTS = 200


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    os.replace(tmp, path)


def plot_hv_vs_cost(curves: dict, reference_hv: float, path: Path, title: str) -> None:
    """Median hypervolume (top-fidelity points) against cost per method, with the IQR shaded.

    Args:
        curves: method -> list over seeds of ``(cum_cost (n,), hv (n,))``.
        reference_hv: drawn as a dashed line (90% and 95% dotted).
    """
    plt = _pyplot()
    top = max((float(cc[-1]) for runs in curves.values() for cc, _ in runs if len(cc)), default=1.0)
    grid = np.linspace(0.0, top, GRID_POINTS)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for m, runs in curves.items():
        vals = np.array([np.where(grid <= cc[-1], hv_at(cc, hv, grid), np.nan) for cc, hv in runs if len(cc)])
        if not len(vals):
            continue
        # Each run's curve ends at its spent cost: quantiles over the runs still going at each cost.
        live = np.any(np.isfinite(vals), axis=0)
        q = np.full((3, len(grid)), np.nan)
        q[:, live] = np.nanpercentile(vals[:, live], [25, 50, 75], axis=0)
        line, = ax.plot(grid, q[1], label=f"{m} ({len(runs)} seeds)")
        ax.fill_between(grid, q[0], q[2], color=line.get_color(), alpha=0.15, linewidth=0)
    ax.axhline(reference_hv, color="k", linestyle="--", linewidth=0.8, label="reference HV")
    for t in (0.9, 0.95):
        ax.axhline(t * reference_hv, color="k", linestyle=":", linewidth=0.6)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0.0)
    ax.set_xlabel("cost (top-fidelity evaluations)")
    ax.set_ylabel("hypervolume of top-fidelity points")
    ax.set_title(title)
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)


def plot_fronts(problem: Problem, results: dict, path: Path) -> None:
    """Each method's top-fidelity evaluations of seed 0 and their non-dominated front in the first two objectives."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    names = problem.objective_names
    for m, runs in results.items():
        if not runs:
            continue
        _, s, y, _ = runs[0].arrays()
        y = y[(s >= TOP_FIDELITY) & np.all(np.isfinite(y), axis=1)]
        if not len(y):
            continue
        # The front in the two plotted objectives (with m > 2 the m-dimensional front would not be a staircase here).
        front = y[NonDominatedSorting().do(y[:, :2], only_non_dominated_front=True)]
        front = front[np.argsort(front[:, 0])]
        pts = ax.scatter(y[:, 0], y[:, 1], s=8, alpha=0.35)
        ax.step(front[:, 0], front[:, 1], where="post", color=pts.get_facecolor()[0][:3], label=m)
    ref = problem.ref_point
    ax.axvline(ref[0], color="k", linewidth=0.6, linestyle="--")
    ax.axhline(ref[1], color="k", linewidth=0.6, linestyle="--")
    ax.set_xlabel(f"{names[0]} (minimized)")
    ax.set_ylabel(f"{names[1]} (minimized)")
    ax.set_title(f"{problem.name}: top-fidelity evaluations and fronts, seed 0")
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
