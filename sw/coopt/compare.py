"""Paired comparison of methods over seeds: runs (resumable), metrics, summary and plots.

Every method of a seed shares the seed's initial design. Runs live in
``OUT/runs/<method>/seed<k>/`` and are resumed or reused when the comparison is run again.
``OUT/summary.json`` holds, per method, the paper's figure (cost to reach NSGA-II's best
hypervolume of the same seed, as a ratio to NSGA-II's cost), the cost to reach 90% and 95% of a
reference hypervolume (the known maximum, else the best of all runs pooled; with a known maximum,
also of the pooled best) with the share of seeds that reach it, the final hypervolume, the
recommended set's hypervolume and the model-based methods' overhead per proposal.
``OUT/hv_vs_cost.png`` and ``OUT/pareto.png`` plot them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .loop import STATE_FILE, OptimizationResult, load_state, optimize, result_from_dir, resume
from .methods import METHODS
from .metrics import censored_summary, cost_at_best, cost_to_reach, hv_at, hv_curve, hypervolume
from .problem import TOP_FIDELITY, Problem
from .recommend import MODEL_METHODS, recommend
from .registry import ProblemSpec

TARGETS = (0.9, 0.95)
BASELINE = "nsga2"


@dataclass(frozen=True)
class CompareConfig:
    """A paired comparison.

    Args:
        problem: a built-in problem's name.
        methods: methods to run (``nsga2`` is needed for the paper's figure).
        seeds: seeds ``0 .. seeds - 1``.
        budget: each run's budget (top-fidelity evaluations).
        budgets: per-method budgets that override ``budget`` (e.g. smaller ones for the
            model-based methods on a small machine; their targets are censored there).
        max_evals: per-method caps on the number of evaluations.
        workers: evaluations in flight per run.
        recommend: size of the recommended set evaluated per model-based run (0: none).
        problem_options: options of the built-in problem.
        n_init: initial-design size of every run (default ``2 d + 2``).
    """

    problem: str
    methods: tuple[str, ...]
    seeds: int
    budget: float
    budgets: Mapping[str, float] = field(default_factory=dict)
    max_evals: Mapping[str, int] = field(default_factory=dict)
    workers: int = 1
    recommend: int = 0
    problem_options: Mapping = field(default_factory=dict)
    n_init: int | None = None

    def __post_init__(self) -> None:
        ProblemSpec(self.problem, self.problem_options)
        if not self.methods:
            raise ValueError("methods must name at least one method")
        for m in (*self.methods, *self.budgets, *self.max_evals):
            if m not in METHODS:
                raise ValueError(f"unknown method {m!r}: choose one of {', '.join(METHODS)}")
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, not {self.seeds}")
        for m, b in {"*": self.budget, **self.budgets}.items():
            if not (math.isfinite(b) and b > 0):
                raise ValueError(f"budget ({m}) must be a positive number of top-fidelity evaluations, not {b!r}")
        if self.recommend < 0:
            raise ValueError(f"recommend must be >= 0, not {self.recommend}")

    def budget_of(self, method: str) -> float:
        return float(self.budgets.get(method, self.budget))


def _run_one(cfg: CompareConfig, method: str, seed: int, out: Path, log) -> OptimizationResult:
    run_dir = out / "runs" / method / f"seed{seed}"
    if (run_dir / STATE_FILE).exists():
        state = load_state(run_dir)
        want = {"budget": cfg.budget_of(method), "max_evals": cfg.max_evals.get(method), "seed": seed,
                "method": method, "n_init": cfg.n_init}
        have = {k: state["config"][k] for k in want}
        if have != want or (state["problem"] or {}).get("options", {}) != dict(cfg.problem_options):
            raise ValueError(f"{run_dir} holds a run with {have}, not {want}: use another --out or remove it")
        if state["done"]:
            return result_from_dir(run_dir)
        return resume(run_dir, log=log)
    return optimize(cfg.problem, method=method, budget=cfg.budget_of(method), seed=seed, workers=cfg.workers,
                    out=run_dir, log=log, max_evals=cfg.max_evals.get(method), problem_options=cfg.problem_options,
                    n_init=cfg.n_init)


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _recommended(problem: Problem, result: OptimizationResult, k: int, run_dir: Path) -> dict:
    path = run_dir / "recommended.json"
    if path.exists():
        return json.loads(path.read_text())
    x = recommend(problem, result, k, seed=result.config.seed)
    y = problem.evaluate(x, np.full(len(x), TOP_FIDELITY))
    rec = {"x": x.tolist(), "y": y.tolist(), "hv": hypervolume(y, problem.ref_point),
           "cost": float(problem.relative_cost(np.full(len(x), TOP_FIDELITY)).sum())}
    _write_json(path, rec)
    return rec


def compare(cfg: CompareConfig, out: str | Path, log: Callable[[str], None] | None = None) -> dict:
    """Run (or resume) every method on every seed, then write ``summary.json`` and the plots.

    Returns:
        The summary (also written to ``OUT/summary.json``).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    problem = ProblemSpec(cfg.problem, cfg.problem_options)()
    curves: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {m: [] for m in cfg.methods}
    results: dict[str, list[OptimizationResult]] = {m: [] for m in cfg.methods}
    recs: dict[str, list[dict]] = {m: [] for m in cfg.methods}
    for seed in range(cfg.seeds):
        for method in cfg.methods:
            if log is not None:
                log(f"[coopt] compare {cfg.problem}: {method} seed {seed}")
            res = _run_one(cfg, method, seed, out, None)
            _, s, y, c = res.arrays()
            curves[method].append(hv_curve(s, y, c, problem.ref_point))
            results[method].append(res)
            if cfg.recommend and method in MODEL_METHODS:
                recs[method].append(_recommended(problem, res, cfg.recommend, out / "runs" / method / f"seed{seed}"))
    summary = summarize(cfg, problem, curves, results, recs)
    _write_json(out / "summary.json", summary)
    from .plots import plot_fronts, plot_hv_vs_cost

    plot_hv_vs_cost(curves, summary["reference_hv"], out / "hv_vs_cost.png", f"{cfg.problem}: hypervolume vs cost")
    plot_fronts(problem, results, out / "pareto.png")
    return summary


def summarize(cfg: CompareConfig, problem: Problem, curves: dict, results: dict, recs: dict) -> dict:
    """The comparison's figures from each run's hypervolume-against-cost curve (see the module doc)."""
    pooled = max((float(hv.max()) if len(hv) else 0.0) for runs in curves.values() for _, hv in runs)
    ref_hv = problem.max_hv if problem.max_hv is not None else pooled
    methods: dict[str, dict] = {}
    base = curves.get(BASELINE)
    for m in cfg.methods:
        budget = cfg.budget_of(m)
        entry: dict = {"budget": budget, "max_evals": cfg.max_evals.get(m)}
        finals = [float(hv[-1]) if len(hv) else 0.0 for _, hv in curves[m]]
        entry["final_hv"] = {"median": float(np.median(finals)), "q25": float(np.percentile(finals, 25)),
                             "q75": float(np.percentile(finals, 75)), "per_seed": finals}
        entry["spent"] = [r.spent for r in results[m]]
        entry["evaluations"] = [len(r.evaluations) for r in results[m]]
        entry["failed"] = [sum(not e.ok for e in r.evaluations) for r in results[m]]
        for t in TARGETS:
            costs = [cost_to_reach(cc, hv, t * ref_hv, budget) for cc, hv in curves[m]]
            entry[f"cost_to_{round(t * 100)}pct"] = {**censored_summary(costs), "per_seed": _finite(costs)}
            if problem.max_hv is not None:  # also against the pooled best: reachable at small budgets
                costs = [cost_to_reach(cc, hv, t * pooled, budget) for cc, hv in curves[m]]
                entry[f"cost_to_{round(t * 100)}pct_of_pooled"] = {**censored_summary(costs),
                                                                    "per_seed": _finite(costs)}
        if base is not None:
            ratios = []
            for (cc, hv), (bc, bhv) in zip(curves[m], base, strict=True):
                best, at = cost_at_best(bc, bhv)
                c = cost_to_reach(cc, hv, best, budget) if best > 0 else math.inf
                ratios.append(c / at if at > 0 else math.inf)
            entry["cost_ratio_to_nsga2_best"] = {**censored_summary(ratios), "per_seed": _finite(ratios)}
        overhead = [f + a for r in results[m] for f, a in r.overhead]
        if overhead:
            cpu = [c for r in results[m] for c in r.overhead_cpu]
            entry["overhead_s"] = {"median": float(np.median(overhead)), "max": float(np.max(overhead)),
                                   "mean": float(np.mean(overhead)), "proposals": len(overhead),
                                   "cpu_median": float(np.median(cpu)), "cpu_max": float(np.max(cpu))}
        if recs.get(m):
            hvs = [r["hv"] for r in recs[m]]
            entry["recommended_hv"] = {"median": float(np.median(hvs)), "per_seed": hvs,
                                       "size": cfg.recommend, "extra_cost_each": recs[m][0]["cost"]}
        methods[m] = entry
    return {"problem": cfg.problem, "seeds": cfg.seeds, "reference_hv": ref_hv,
            "reference": "known maximum" if problem.max_hv is not None else "best of all runs pooled",
            "pooled_best_hv": pooled, "methods": methods,
            "hv_grid": _grid_summary(curves, max(cfg.budget_of(m) for m in cfg.methods))}


def _finite(values: list[float]) -> list[float | None]:
    return [None if math.isinf(v) else float(v) for v in values]


def _grid_summary(curves: dict, budget: float, points: int = 41) -> dict:
    grid = np.linspace(0.0, budget, points)
    out = {"cost": grid.tolist()}
    for m, runs in curves.items():
        vals = np.array([hv_at(cc, hv, grid) for cc, hv in runs])
        out[m] = np.median(vals, axis=0).tolist()
    return out
