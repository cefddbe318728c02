"""The optimization loop: ``optimize`` and ``resume``, with the run's state saved after each evaluation.

The loop keeps ``workers`` evaluations in flight. Each proposal sees every finished evaluation and
the pending ones (conditioned on). Cost is counted in top-fidelity units, ``c(s) / c(1)``, for every
evaluation, the initial design and failures included; no proposal is made once the spent plus
in-flight cost reaches the budget (the last evaluation may end past it).

State (``DIR/state.json``, written to a temporary file and renamed after every proposal and every
evaluation): the configuration, the initial design, every proposal and evaluation in order and the
pending ones. The random state is a function of the seed and the proposal number
(``numpy.random.default_rng([seed, proposal])``), so recording the proposal count records it;
:func:`resume` re-submits the pending evaluations and carries on without repeating finished ones.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from .acquisition import AcquisitionConfig
from .executors import InProcess, Outcome, RayPool
from .methods import METHODS, MULTI_FIDELITY, History, Proposal, make_method
from .problem import TOP_FIDELITY, Problem
from .registry import ProblemSpec

STATE_FILE = "state.json"
STATE_VERSION = 1
#: Seed-sequence tag of the initial design (shared by every method of a seed).
INIT_TAG = 0x1A17


@dataclass(frozen=True)
class RunConfig:
    """One optimization run.

    Args:
        method: one of :data:`~vitforge.sw.coopt.methods.METHODS`.
        budget: total cost, in top-fidelity evaluations, > 0.
        seed: seeds the initial design and every proposal.
        workers: evaluations kept in flight; 1 runs in this process without Ray.
        ray_address: join this Ray cluster instead of starting a local one.
        n_init: initial-design size (default ``2 d + 2``).
        max_evals: stop after this many evaluations even below the budget (None: no limit).
        acquisition: sizes of the model-based methods' acquisition.
    """

    method: str
    budget: float
    seed: int = 0
    workers: int = 1
    ray_address: str | None = None
    n_init: int | None = None
    max_evals: int | None = None
    acquisition: AcquisitionConfig = field(default_factory=AcquisitionConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}: choose one of {', '.join(METHODS)}")
        if not (isinstance(self.budget, int | float) and math.isfinite(self.budget) and self.budget > 0):
            raise ValueError(f"budget must be a positive number of top-fidelity evaluations, not {self.budget!r}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, not {self.workers}")
        if self.n_init is not None and self.n_init < 1:
            raise ValueError(f"n_init must be >= 1, not {self.n_init}")
        if self.max_evals is not None and self.max_evals < 1:
            raise ValueError(f"max_evals must be >= 1 or None, not {self.max_evals}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        return cls(**{**d, "acquisition": AcquisitionConfig(**d["acquisition"])})


@dataclass(frozen=True)
class Evaluation:
    """One finished evaluation, in the order evaluations finished.

    Attributes:
        id: proposal number.
        x: ``d`` design values (rounded) as evaluated.
        fidelity: in ``[0, 1]``.
        y: ``m`` objectives, or None if it failed.
        cost: in top-fidelity units.
        error: why it failed (None if it did not).
        seconds: wall time of the evaluation.
    """

    id: int
    x: list[float]
    fidelity: float
    y: list[float] | None
    cost: float
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.y is not None


@dataclass
class OptimizationResult:
    """A run's evaluations and figures.

    Attributes:
        evaluations: every evaluation in finishing order.
        config: the run's configuration.
        problem: the problem.
        overhead: per model-based proposal, ``(fit_s, acq_s)`` wall seconds.
        overhead_cpu: per model-based proposal, CPU seconds of fit and acquisition together.
        out: the run's directory (None if it ran in memory).
    """

    evaluations: list[Evaluation]
    config: RunConfig
    problem: Problem
    overhead: list[tuple[float, float]]
    out: Path | None = None
    overhead_cpu: list[float] = field(default_factory=list)

    @property
    def spent(self) -> float:
        return float(sum(e.cost for e in self.evaluations))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``x (n, d)``, ``fidelity (n,)``, ``y (n, m)`` (NaN rows for failures), ``cost (n,)``."""
        m = self.problem.num_objectives
        x = np.array([e.x for e in self.evaluations], dtype=np.float64).reshape(-1, self.problem.dim)
        s = np.array([e.fidelity for e in self.evaluations], dtype=np.float64)
        y = np.array([e.y if e.ok else [np.nan] * m for e in self.evaluations], dtype=np.float64).reshape(-1, m)
        c = np.array([e.cost for e in self.evaluations], dtype=np.float64)
        return x, s, y, c


def initial_design(problem: Problem, n: int, seed: int, multi_fidelity: bool) -> tuple[np.ndarray, np.ndarray]:
    """The seed's initial design: a Latin hypercube of ``n`` designs, ``(n, d)`` unit, and fidelities ``(n,)``.

    The designs are the same for every method of a seed; multi-fidelity methods evaluate them at
    fidelities drawn uniformly in ``[min_fidelity, 1]`` (the same draws for each such method),
    the others at the top fidelity.
    """
    rng = np.random.default_rng([seed, INIT_TAG])
    u = (np.stack([rng.permutation(n) for _ in range(problem.dim)], axis=1) + rng.random((n, problem.dim))) / n
    u = problem.to_unit(problem.from_unit(u))
    s_mf = rng.uniform(problem.min_fidelity, TOP_FIDELITY, n)
    return u, (s_mf if multi_fidelity else np.full(n, TOP_FIDELITY))


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class _Run:
    """The loop's state, its persistence and its progress."""

    def __init__(self, problem: Problem, spec: ProblemSpec | None, cfg: RunConfig, out: Path | None,
                 state: dict | None, log: Callable[[str], None] | None) -> None:
        self.problem, self.spec, self.cfg, self.out = problem, spec, cfg, out
        self.log = log
        n_init = cfg.n_init or 2 * problem.dim + 2
        if state is None:
            u, s = initial_design(problem, n_init, cfg.seed, cfg.method in MULTI_FIDELITY)
            state = {"version": STATE_VERSION,
                     "problem": None if spec is None else {"name": spec.name, "options": dict(spec.options)},
                     "config": cfg.to_dict(), "init": {"u": u.tolist(), "s": s.tolist()},
                     "rng": "numpy.random.default_rng([seed, proposal id]) per proposal",
                     "proposals": [], "evaluations": [], "pending": [], "done": False}
        self.state = state
        self.init_u = np.asarray(state["init"]["u"], dtype=np.float64).reshape(-1, problem.dim)
        self.init_s = np.asarray(state["init"]["s"], dtype=np.float64)
        self.method = make_method(cfg.method, problem, self.init_u, cfg.budget, cfg.seed, cfg.acquisition)

    # -- bookkeeping -------------------------------------------------------------------------------
    def save(self) -> None:
        if self.out is not None:
            _write_json(self.out / STATE_FILE, self.state)

    @property
    def spent(self) -> float:
        return float(sum(e["cost"] for e in self.state["evaluations"]))

    def inflight_cost(self) -> float:
        props = self.state["proposals"]
        return float(sum(props[pid]["cost"] for pid in self.state["pending"]))

    def history(self) -> History:
        d, m = self.problem.dim, self.problem.num_objectives
        props = self.state["proposals"]
        evs = self.state["evaluations"]
        u = np.array([props[e["id"]]["u"] for e in evs], dtype=np.float64).reshape(-1, d)
        s = np.array([e["fidelity"] for e in evs], dtype=np.float64)
        y = np.array([e["y"] if e["y"] is not None else [np.nan] * m for e in evs], dtype=np.float64).reshape(-1, m)
        ok = np.array([e["y"] is not None for e in evs], dtype=bool)
        pend = self.state["pending"]
        pu = np.array([props[p]["u"] for p in pend], dtype=np.float64).reshape(-1, d)
        ps = np.array([props[p]["s"] for p in pend], dtype=np.float64)
        results = {e["id"]: (None if e["y"] is None else np.asarray(e["y"])) for e in evs}
        proposals = [(p["id"], np.asarray(p["u"]), p["s"]) for p in props]
        return History(u, s, y, ok, pu, ps, proposals, results)

    def may_propose(self) -> bool:
        n = len(self.state["proposals"])
        if self.cfg.max_evals is not None and n >= self.cfg.max_evals:
            return False
        return self.spent + self.inflight_cost() < self.cfg.budget

    def next_proposal(self) -> Proposal | None:
        pid = len(self.state["proposals"])
        if self.cfg.method != "nsga2" and pid < len(self.init_u):
            return Proposal(self.init_u[pid], float(self.init_s[pid]))
        if self.cfg.method != "nsga2" and len(self.state["evaluations"]) < len(self.init_u):
            return None  # the model needs the whole initial design
        if self.cfg.method != "nsga2" and pid == len(self.init_u):
            self.check_ref_point()
        return self.method.propose(self.history(), np.random.default_rng([self.cfg.seed, pid]))

    def check_ref_point(self) -> None:
        ys = [e["y"] for e in self.state["evaluations"] if e["y"] is not None]
        if ys:
            self.problem.check_ref_point(np.asarray(ys))

    def add_proposal(self, prop: Proposal) -> dict:
        pid = len(self.state["proposals"])
        u = self.problem.to_unit(self.problem.from_unit(prop.u[None, :]))[0]
        x = self.problem.from_unit(u[None, :])[0]
        cost = float(self.problem.relative_cost(np.array([prop.s]))[0])
        rec = {"id": pid, "u": u.tolist(), "x": x.tolist(), "s": float(prop.s), "cost": cost,
               "fit_s": prop.fit_s, "acq_s": prop.acq_s, "cpu_s": prop.cpu_s,
               "score": None if math.isnan(prop.score) else prop.score}
        self.state["proposals"].append(rec)
        self.state["pending"].append(pid)
        self.save()
        return rec

    def add_outcome(self, out: Outcome) -> None:
        rec = self.state["proposals"][out.pid]
        y = None if out.y is None else [float(v) for v in out.y]
        self.state["evaluations"].append({"id": out.pid, "x": rec["x"], "fidelity": rec["s"], "y": y,
                                          "cost": rec["cost"], "error": out.error, "seconds": out.seconds})
        self.state["pending"].remove(out.pid)
        self.save()
        if self.log is not None:
            status = "ok" if y is not None else f"failed: {out.error}"
            self.log(f"[coopt] {self.cfg.method} seed {self.cfg.seed}: eval {out.pid} s={rec['s']:.3f} "
                     f"cost {self.spent:.3f}/{self.cfg.budget:g} {status}")

    def result(self) -> OptimizationResult:
        evs = [Evaluation(e["id"], e["x"], e["fidelity"], e["y"], e["cost"], e["error"], e["seconds"])
               for e in self.state["evaluations"]]
        model = [p for p in self.state["proposals"] if p["fit_s"] or p["acq_s"]]
        return OptimizationResult(evs, self.cfg, self.problem, [(p["fit_s"], p["acq_s"]) for p in model], self.out,
                                  [p.get("cpu_s", 0.0) for p in model])

    # -- the loop ----------------------------------------------------------------------------------
    def run(self) -> OptimizationResult:
        if self.state["done"]:
            return self.result()
        if self.cfg.workers == 1 and self.cfg.ray_address is None:
            pool = InProcess(self.problem)
        else:
            factory = self.spec if self.spec is not None else _Fixed(self.problem)
            pool = RayPool(factory, self.cfg.workers, self.cfg.ray_address)
        bar = _progress(self.cfg)
        # The proposals' matrices are small: BLAS threads only contend (2 cores, other jobs).
        limits = threadpool_limits(limits=1)
        try:
            for pid in list(self.state["pending"]):  # a resumed run: finish what was in flight
                rec = self.state["proposals"][pid]
                pool.submit(pid, np.asarray(rec["x"]), rec["s"])
            inflight = len(self.state["pending"])
            while True:
                while inflight < self.cfg.workers and self.may_propose():
                    prop = self.next_proposal()
                    if prop is None:
                        break
                    rec = self.add_proposal(prop)
                    pool.submit(rec["id"], np.asarray(rec["x"]), rec["s"])
                    inflight += 1
                if inflight == 0:
                    break
                self.add_outcome(pool.wait())
                inflight -= 1
                if bar is not None:
                    bar.update(min(self.spent, self.cfg.budget) - bar.n)
        finally:
            limits.restore_original_limits()
            pool.close()
            if bar is not None:
                bar.close()
        self.state["done"] = True
        self.save()
        return self.result()


@dataclass(frozen=True)
class _Fixed:
    """A picklable factory for a user's problem (shipped to Ray workers with cloudpickle)."""

    problem: Problem

    @property
    def cache_key(self) -> str:
        return f"custom:{self.problem.name}:{id(self.problem)}"

    def __call__(self) -> Problem:
        return self.problem


def _progress(cfg: RunConfig):
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=cfg.budget, desc=f"{cfg.method} seed {cfg.seed}", unit="cost", leave=False)


def optimize(problem: Problem | str, method: str = "cfmesmo", budget: float = 20.0, seed: int = 0,
             workers: int = 1, out: str | Path | None = None, ray_address: str | None = None,
             log: Callable[[str], None] | None = None, problem_options: dict | None = None,
             **options) -> OptimizationResult:
    """Optimize ``problem`` with ``method`` until ``budget`` (top-fidelity evaluations) is spent.

    Args:
        problem: a :class:`Problem` or a built-in problem's name.
        method: ``cfmesmo``, ``mesmo``, ``momf``, ``nsga2`` or ``random``.
        budget: total cost in top-fidelity units (> 0).
        seed: seeds the initial design and the proposals.
        workers: evaluations in flight (1: in this process; more: Ray tasks).
        out: directory for the state (resumable with :func:`resume`); None keeps it in memory.
        ray_address: join a running Ray cluster.
        log: called with one line per evaluation.
        problem_options: options of a built-in problem (JSON values; recorded in the state).
        **options: more :class:`RunConfig` fields (``n_init``, ``max_evals``, ``acquisition``).

    Returns:
        An :class:`OptimizationResult`; ``evaluations`` holds, in order, every ``x``,
        ``fidelity``, ``y`` and ``cost``.
    """
    spec = None
    if isinstance(problem, str):
        spec = ProblemSpec(problem, dict(problem_options or {}))
        problem = spec()
    elif problem_options:
        raise ValueError("problem_options apply to built-in problems (pass the problem's name)")
    cfg = RunConfig(method=method, budget=budget, seed=seed, workers=workers, ray_address=ray_address, **options)
    path = None
    if out is not None:
        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        if (path / STATE_FILE).exists():
            raise ValueError(f"{path / STATE_FILE} exists: use resume({str(path)!r}) to continue that run, "
                             "or choose another directory")
    return _Run(problem, spec, cfg, path, None, log).run()


def load_state(out: str | Path) -> dict:
    path = Path(out) / STATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"no run state at {path} (a run directory holds {STATE_FILE})")
    state = json.loads(path.read_text())
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"{path}: state version {state.get('version')!r}, this code reads {STATE_VERSION}")
    return state


def resume(out: str | Path, problem: Problem | None = None, workers: int | None = None,
           log: Callable[[str], None] | None = None) -> OptimizationResult:
    """Continue the run saved in ``out``.

    Args:
        out: the run's directory.
        problem: the problem, for a user's problem (built-in problems are rebuilt by name).
        workers: change the number of workers (default: the run's).
        log: as in :func:`optimize`.
    """
    state = load_state(out)
    spec = None
    if state["problem"] is not None:
        spec = ProblemSpec(state["problem"]["name"], state["problem"]["options"])
        problem = spec() if problem is None else problem
    elif problem is None:
        raise ValueError(f"{out}: the run optimized a user's problem; pass it: resume({str(out)!r}, problem=...)")
    cfg = RunConfig.from_dict(state["config"])
    if workers is not None and workers != cfg.workers:
        cfg = RunConfig.from_dict({**cfg.to_dict(), "workers": workers})
        state["config"] = cfg.to_dict()
        state["done"] = False
    return _Run(problem, spec, cfg, Path(out), state, log).run()


def result_from_dir(out: str | Path, problem: Problem | None = None) -> OptimizationResult:
    """The result recorded in ``out`` (finished or not) without running anything."""
    state = load_state(out)
    spec = None
    if state["problem"] is not None:
        spec = ProblemSpec(state["problem"]["name"], state["problem"]["options"])
        problem = spec() if problem is None else problem
    cfg = RunConfig.from_dict(state["config"])
    return _Run(problem, spec, cfg, Path(out), state, None).result()
