"""CF-MESMO's overhead per proposal (GP fit + acquisition) on a synthetic problem of a given size.

The target (the issue's): under 5 s per proposal for ``d <= 8`` and ``m <= 4`` on 2 cores.
``scripts/bench_coopt.py`` prints these figures.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from .acquisition import AcquisitionConfig
from .methods import History, Mesmo
from .problem import Problem

#: A pruning constant above any standardized sd: only the top fidelity stays.
PRUNE_ALL = 1e6


def synthetic_problem(d: int, m: int) -> Problem:
    """A DTLZ2-like problem on ``[0, 1]^d`` with ``m`` objectives; the fidelity shifts the optimum."""
    if not 2 <= m <= d:
        raise ValueError(f"m must be in 2..d = 2..{d}, not {m}")

    def f(x: np.ndarray, s: np.ndarray) -> np.ndarray:
        g = ((x[:, m - 1:] - 0.5 - 0.1 * (1.0 - s)[:, None]) ** 2).sum(axis=1)
        theta = 0.5 * np.pi * x[:, : m - 1]
        out = np.empty((len(x), m))
        for j in range(m):
            v = (1.0 + g) * np.prod(np.cos(theta[:, : m - 1 - j]), axis=1)
            if j > 0:
                v = v * np.sin(theta[:, m - 1 - j])
            out[:, j] = v
        return out

    return Problem(bounds=[(0.0, 1.0)] * d, objectives=f, cost=lambda s: np.exp(4.8 * s), ref_point=[2.5] * m,
                   name=f"dtlz2-d{d}-m{m}")


def measure_overhead(d: int, m: int, n: int, proposals: int, seed: int = 0,
                     cfg: AcquisitionConfig | None = None, top_share: float = 0.0) -> dict:
    """Seconds of fit and acquisition per CF-MESMO proposal with ``n`` evaluations in the history.

    ``top_share`` of the history is at the top fidelity (the rest at uniform random ones). With
    ``cfg.top_choice == "ehvi"`` (CF-MESMO-HV) the cheap fidelities are pruned (``prune_xi``
    large), so every proposal takes the expected-improvement path: its worst case.

    Returns:
        ``{"d", "m", "n", "fit_s": [...], "acq_s": [...], "cpu_s": [...], "total_median_s", "total_max_s",
        "cpu_median_s", "cpu_max_s"}``: wall seconds (``*_s``) and this process's CPU seconds
        (``cpu_*``: the wall time on an otherwise idle machine; one thread).
    """
    problem = synthetic_problem(d, m)
    rng = np.random.default_rng(seed)
    u, s = rng.random((n, d)), rng.random(n)
    s[: round(top_share * n)] = 1.0
    if cfg is not None and cfg.top_choice == "ehvi":
        cfg = replace(cfg, prune_xi=PRUNE_ALL)
    y = problem.evaluate(u, s)
    method = Mesmo(problem, multi_fidelity=True, cfg=cfg)
    fit, acq, cpu = [], [], []
    for k in range(proposals):
        t0 = time.perf_counter()
        p = method.propose(History(u, s, y, np.ones(len(s), bool), np.zeros((0, d)), np.zeros(0)),
                           np.random.default_rng([seed, k]))
        fit.append(p.fit_s)
        acq.append(p.acq_s)
        cpu.append(p.cpu_s)
        assert time.perf_counter() - t0 >= p.fit_s + p.acq_s - 1e-6
    totals = np.add(fit, acq)
    return {"d": d, "m": m, "n": n, "fit_s": fit, "acq_s": acq, "total_median_s": float(np.median(totals)),
            "total_max_s": float(np.max(totals)), "cpu_s": cpu, "cpu_median_s": float(np.median(cpu)),
            "cpu_max_s": float(np.max(cpu))}
