"""The comparison's metrics: hypervolume against cost, cost to reach a hypervolume, paired summaries.

Rules (hard to game): cost counts every evaluation in top-fidelity units, the initial design and
failures included; hypervolume counts only points evaluated at the top fidelity, with their true
values (pymoo's exact ``HV``). A target a run does not reach within its budget is censored: it
counts as "not reached" (``inf``), never as the budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pymoo.indicators.hv import HV

from .problem import TOP_FIDELITY


def hypervolume(y: np.ndarray, ref_point: Sequence[float]) -> float:
    """Hypervolume dominated by ``y (n, m)`` (minimized) up to ``ref_point``; 0 for no point inside."""
    y = np.asarray(y, dtype=np.float64).reshape(-1, len(ref_point))
    ref = np.asarray(ref_point, dtype=np.float64)
    y = y[np.all(np.isfinite(y), axis=1) & np.all(y < ref, axis=1)]
    return float(HV(ref_point=ref)(y)) if len(y) else 0.0


def hv_curve(fidelity: np.ndarray, y: np.ndarray, cost: np.ndarray,
             ref_point: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Hypervolume of the top-fidelity points after each evaluation.

    Args:
        fidelity: ``(n,)`` float64, in evaluation order.
        y: ``(n, m)`` float64 objectives (NaN rows for failures).
        cost: ``(n,)`` float64 costs in top-fidelity units.
        ref_point: ``m`` values.

    Returns:
        ``cum_cost (n,)`` and ``hv (n,)`` float64: cumulative cost and hypervolume after each evaluation.
    """
    hv = np.zeros(len(fidelity))
    current, top = 0.0, []
    for k in range(len(fidelity)):
        if fidelity[k] >= TOP_FIDELITY and np.all(np.isfinite(y[k])):
            top.append(y[k])
            current = hypervolume(np.asarray(top), ref_point)
        hv[k] = current
    return np.cumsum(cost), hv


def cost_to_reach(cum_cost: np.ndarray, hv: np.ndarray, target: float, budget: float) -> float:
    """The cost at which ``hv`` first reaches ``target`` (``inf`` if not within ``budget``)."""
    hit = np.flatnonzero(hv >= target - 1e-12)
    if not len(hit) or cum_cost[hit[0]] > budget + 1e-9:
        return math.inf
    return float(cum_cost[hit[0]])


def cost_at_best(cum_cost: np.ndarray, hv: np.ndarray) -> tuple[float, float]:
    """A run's best hypervolume and the cost at which it first reached it."""
    best = float(hv.max()) if len(hv) else 0.0
    return best, float(cum_cost[int(np.argmax(hv >= best - 1e-12))]) if len(hv) else math.inf


def hv_at(cum_cost: np.ndarray, hv: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Hypervolume reached by each cost in ``grid`` (step function; 0 before the first evaluation)."""
    idx = np.searchsorted(cum_cost, grid, side="right") - 1
    return np.where(idx >= 0, hv[np.clip(idx, 0, None)], 0.0)


def censored_summary(values: Sequence[float]) -> dict:
    """Median and IQR of values where ``inf`` means "not reached" (censored at the budget).

    Quantiles are taken over all seeds with the censored ones at ``+inf``, so a median that is
    ``inf`` says more than half of the seeds did not reach the target. Returns ``median``,
    ``q25``, ``q75`` (None for ``inf``), ``reached`` (share of seeds) and ``n``.
    """
    v = np.sort(np.asarray(values, dtype=np.float64))
    if not len(v):
        return {"median": None, "q25": None, "q75": None, "reached": 0.0, "n": 0}

    def q(p: float) -> float | None:
        # inverted-CDF quantile: works with inf entries (no interpolation across them)
        k = max(0, math.ceil(p * len(v)) - 1)
        val = float(v[k])
        return None if math.isinf(val) else val

    return {"median": _median(v), "q25": q(0.25), "q75": q(0.75),
            "reached": float(np.mean(np.isfinite(v))), "n": len(v)}


def _median(v: np.ndarray) -> float | None:
    n = len(v)
    mid = v[n // 2] if n % 2 else 0.5 * (v[n // 2 - 1] + v[n // 2])
    return None if math.isinf(mid) or math.isnan(mid) else float(mid)
