"""The optimizers: CF-MESMO, CF-MESMO-HV, single-fidelity MESMO, BoTorch's MOMF, NSGA-II and random search.

CF-MESMO-HV (``cfmesmo-hv``) is an extension of the paper's CF-MESMO, not part of it: the fidelity
is chosen the same way, the design at the top fidelity by expected hypervolume improvement over
the evaluated top-fidelity front (``improvement.py``), with a lower pruning constant.

Each method is a proposer: ``propose(history, rng)`` returns the next ``(u, fidelity)`` to evaluate
(``u`` in the unit cube) from the evaluations so far and the pending ones, or ``None`` when it must
wait for pending results (NSGA-II between generations). Proposers keep no state that the history
does not determine: NSGA-II replays its generations from the history, the model-based methods refit
from it. A resumed run therefore continues exactly where the killed one stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from .acquisition import AcquisitionConfig, information, keep_fidelity, sample_fronts
from .problem import TOP_FIDELITY, Problem

METHODS = ("cfmesmo", "cfmesmo-hv", "mesmo", "momf", "nsga2", "random")
#: Methods that choose fidelities; the others evaluate at the top fidelity only.
MULTI_FIDELITY = frozenset({"cfmesmo", "cfmesmo-hv", "momf"})
#: NSGA-II's generations at the budget: population = budget / this (at least the initial design).
NSGA2_GENERATIONS = 5
NSGA2_MIN_POP = 8
#: CF-MESMO-HV's pruning constant: lower than CF-MESMO's 1.0, so that more cheap evaluations teach the
#: model the front before the top-fidelity ones (momf-branin-currin, seeds 0-2, budget 20: with 1.0
#: the first top-fidelity points often missed the front and 90% of the maximum was reached in 1 of 3
#: seeds (at cost 18.4); with 0.3 in 3 of 3, at cost 13.5-14.9).
HV_PRUNE_XI = 0.3
#: MC samples of MOMF's hypervolume improvement.
MOMF_MC_SAMPLES = 64


@dataclass
class History:
    """What a proposer sees.

    Attributes:
        u: ``(n, d)`` float64 unit-cube designs of finished evaluations (rounded designs' images).
        s: ``(n,)`` float64 fidelities.
        y: ``(n, m)`` float64 objectives (NaN rows for failed evaluations).
        ok: ``(n,)`` bool, finished without error.
        pending_u, pending_s: ``(p, d)``, ``(p,)``: proposed, not finished.
        proposals: every proposal in order, ``(id, u, s)``, finished or pending, for replay.
        results: id -> objectives of finished proposals (None if failed).
    """

    u: np.ndarray
    s: np.ndarray
    y: np.ndarray
    ok: np.ndarray
    pending_u: np.ndarray
    pending_s: np.ndarray
    proposals: list[tuple[int, np.ndarray, float]] = field(default_factory=list)
    results: dict[int, np.ndarray | None] = field(default_factory=dict)


@dataclass(frozen=True)
class Proposal:
    """A point to evaluate and what it cost to choose it.

    Attributes:
        u: ``(d,)`` float64 unit-cube design.
        s: fidelity in ``[0, 1]``.
        fit_s, acq_s: wall seconds spent fitting the model and optimizing the acquisition.
        score: the acquisition value (NaN where there is none).
        cpu_s: this process's CPU seconds for both (what the wall time is on an idle machine).
    """

    u: np.ndarray
    s: float
    fit_s: float = 0.0
    acq_s: float = 0.0
    score: float = float("nan")
    cpu_s: float = 0.0


class RandomSearch:
    """Uniform random designs at the top fidelity."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem

    def propose(self, history: History, rng: np.random.Generator) -> Proposal:
        u = self.problem.to_unit(self.problem.from_unit(rng.random((1, self.problem.dim))))[0]
        return Proposal(u, TOP_FIDELITY)


class Nsga2Search:
    """pymoo's NSGA-II at the top fidelity, one individual per proposal (ask/tell).

    The first population is the shared initial design, filled up with random designs drawn from
    the run's seed. Generation ``g + 1`` is asked once every individual of generation ``g`` has
    finished; until then :meth:`propose` returns ``None``.
    """

    def __init__(self, problem: Problem, init_u: np.ndarray, budget: float, seed: int) -> None:
        from pymoo.algorithms.moo.nsga2 import NSGA2
        from pymoo.core.problem import Problem as PymooProblem

        self.problem = problem
        pop = max(NSGA2_MIN_POP, len(init_u), round(budget / NSGA2_GENERATIONS))
        rng = np.random.default_rng([seed, 0x4E5347])
        fill = rng.random((pop - len(init_u), problem.dim))
        first = problem.to_unit(problem.from_unit(np.vstack([init_u, fill])))
        self.pop_size = pop
        self.algo = NSGA2(pop_size=pop, sampling=first)
        self.algo.setup(PymooProblem(n_var=problem.dim, n_obj=problem.num_objectives, xl=0.0, xu=1.0),
                        termination=("n_gen", 10**9), seed=seed, verbose=False)
        self.generation: list[np.ndarray] = []  # unit designs of the current generation, in ask order
        self.consumed = 0  # proposals of earlier generations
        self.pop = None

    def _ask(self) -> None:
        self.pop = self.algo.ask()
        x = self.problem.to_unit(self.problem.from_unit(np.asarray(self.pop.get("X"))))
        self.generation = list(x)

    def propose(self, history: History, rng: np.random.Generator) -> Proposal | None:
        if self.pop is None:
            self._ask()
        while True:
            ids = [pid for pid, _, _ in history.proposals[self.consumed : self.consumed + len(self.generation)]]
            if len(ids) < len(self.generation):
                return Proposal(self.generation[len(ids)], TOP_FIDELITY)
            if not all(pid in history.results for pid in ids):
                return None
            big = np.full(self.problem.num_objectives, 1e30)
            f = np.array([history.results[pid] if history.results[pid] is not None else big for pid in ids])
            f = np.where(np.isfinite(f), f, 1e30)
            self.pop.set("F", f)
            self.algo.tell(infills=self.pop)
            self.consumed += len(ids)
            self._ask()


class Mesmo:
    """CF-MESMO (``multi_fidelity=True``) and single-fidelity MESMO (the same code at fidelity 1).

    Each proposal fits one GP per objective on the finished evaluations, conditions them on the
    pending ones, samples Pareto fronts at the top fidelity and picks the candidate ``(x, z)``
    with the most information about the front per unit cost (see ``acquisition.py``). With
    ``cfg.top_choice == "ehvi"`` (CF-MESMO-HV) a top-fidelity choice takes the design of
    :meth:`improving_design` instead.
    """

    def __init__(self, problem: Problem, multi_fidelity: bool, cfg: AcquisitionConfig | None = None) -> None:
        self.problem = problem
        self.multi_fidelity = multi_fidelity
        self.cfg = cfg or AcquisitionConfig()

    def snap(self, u: np.ndarray) -> np.ndarray:
        return self.problem.to_unit(self.problem.from_unit(u))

    def fidelities(self) -> np.ndarray:
        if not self.multi_fidelity:
            return np.array([TOP_FIDELITY])
        return np.linspace(self.problem.min_fidelity, TOP_FIDELITY, self.cfg.fidelity_levels)

    def propose(self, history: History, rng: np.random.Generator) -> Proposal:
        from .surrogate import fit_models

        t0, c0 = time.perf_counter(), time.process_time()
        train_x = np.hstack([history.u[history.ok], history.s[history.ok, None]])
        models = fit_models(train_x, history.y[history.ok], seed=int(rng.integers(2**31 - 1)))
        pending = np.hstack([history.pending_u, history.pending_s[:, None]])
        models = models.conditioned(pending)
        t1 = time.perf_counter()
        y_star, pareto_u = sample_fronts(models, self.cfg, rng, self.snap)
        best = history.u[history.ok]
        cand_u = np.unique(np.vstack([self.snap(rng.random((self.cfg.num_candidates, self.problem.dim))),
                                      pareto_u, best]), axis=0)
        zs = self.fidelities()
        xz = np.hstack([np.repeat(cand_u, len(zs), axis=0), np.tile(zs, len(cand_u))[:, None]])
        score = self.score(models, xz, y_star)
        # Never the same (design, fidelity) twice; exact ties (information underflows to 0 far
        # from the front) are broken by the proposal's generator, not by the candidates' order.
        seen = {tuple(r) for r in np.hstack([history.u, history.s[:, None]]).round(12)}
        seen |= {tuple(r) for r in pending.round(12)}
        score = np.where([tuple(r) in seen for r in xz.round(12)], -np.inf, score)
        best = np.flatnonzero(score >= score.max())
        i = int(best[rng.integers(len(best))]) if len(best) > 1 else int(best[0])
        u, s, value = xz[i, :-1].copy(), float(xz[i, -1]), float(score[i])
        if self.cfg.top_choice == "ehvi" and s >= TOP_FIDELITY:
            u, value = self.improving_design(models, history, np.vstack([cand_u, pareto_u]), seen, rng)
        t2 = time.perf_counter()
        return Proposal(u, s, fit_s=t1 - t0, acq_s=t2 - t1, score=value, cpu_s=time.process_time() - c0)

    def improving_design(self, models, history: History, cand_u: np.ndarray, seen: set,
                         rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """CF-MESMO-HV's design at the top fidelity: the candidate of largest expected hypervolume improvement.

        The candidates are ``cand_u (n, d)`` plus the Pareto set of the posterior mean at ``s = 1``,
        less the designs already evaluated or pending there; the front is the evaluated
        top-fidelity points (see ``improvement.py``). Returns the design ``(d,)`` and its log EHVI.
        """
        from .improvement import expected_hv_improvement, predicted_pareto_set

        top_ok = history.ok & (history.s >= TOP_FIDELITY)
        start = np.vstack([cand_u, history.u[history.ok]])
        mu = models.predict(np.hstack([start, np.ones((len(start), 1))]))[0]
        order = np.argsort(_nd_rank(mu), kind="stable")[: self.cfg.nsga_pop]
        mean_set = predicted_pareto_set(models, self.snap, self.cfg.nsga_pop, self.cfg.nsga_gens,
                                        seed=int(rng.integers(2**31 - 1)), start=start[order])
        cand = np.unique(np.vstack([cand_u, mean_set, history.u[history.ok]]), axis=0)
        fresh = np.array([tuple(np.append(c, TOP_FIDELITY).round(12)) not in seen for c in cand], dtype=bool)
        cand = cand[fresh]
        if not len(cand):  # every candidate evaluated at s = 1 already: a fresh random design
            return self.snap(rng.random((1, self.problem.dim)))[0], float("nan")
        pending_top = history.pending_u[history.pending_s >= TOP_FIDELITY]
        value = expected_hv_improvement(models, cand, history.y[top_ok], self.problem.ref_point, pending_top,
                                        self.cfg.ehvi_samples, seed=int(rng.integers(2**31 - 1)))
        best = np.flatnonzero(value >= value.max())
        i = int(best[rng.integers(len(best))]) if len(best) > 1 else int(best[0])
        return cand[i].copy(), float(value[i])

    def score(self, models, xz: np.ndarray, y_star: np.ndarray) -> np.ndarray:
        """Information per unit cost at ``xz (n, d + 1)``, pruned fidelities at ``-inf``: ``(n,)``."""
        post = models.joint_top(xz)
        info = information(post, xz, y_star, self.cfg)
        rel = self.problem.relative_cost(xz[:, -1])
        top = xz[:, -1] >= TOP_FIDELITY
        sd_z = post[1]
        keep = keep_fidelity(sd_z, rel, top, self.problem.dim, self.cfg.prune_xi)
        return np.where(keep, info / rel, -np.inf)


class Momf:
    """BoTorch's MOMF (qEHVI with the fidelity appended as an objective, divided by cost).

    One ``SingleTaskGP`` over (x, s) for the m objectives (negated: MOMF maximizes) and the
    fidelity objective, as in BoTorch's MOMF tutorial; its acquisition is maximized over the same
    kind of random candidate set CF-MESMO uses (designs x a fidelity grid), with the pending
    points passed as ``X_pending``.
    """

    def __init__(self, problem: Problem, cfg: AcquisitionConfig | None = None) -> None:
        self.problem = problem
        self.cfg = cfg or AcquisitionConfig()

    def propose(self, history: History, rng: np.random.Generator) -> Proposal:
        import torch
        from botorch.acquisition.multi_objective.multi_fidelity import MOMF
        from botorch.fit import fit_gpytorch_mll
        from botorch.models import SingleTaskGP
        from botorch.models.transforms.outcome import Standardize
        from botorch.sampling import SobolQMCNormalSampler
        from botorch.utils.multi_objective.box_decompositions.non_dominated import FastNondominatedPartitioning
        from gpytorch.mlls import ExactMarginalLogLikelihood

        t0, c0 = time.perf_counter(), time.process_time()
        dt = torch.float64
        ok = history.ok
        x = torch.as_tensor(np.hstack([history.u[ok], history.s[ok, None]]), dtype=dt)
        obj = torch.as_tensor(np.hstack([-history.y[ok], history.s[ok, None]]), dtype=dt)
        seed = int(rng.integers(2**31 - 1))
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = SingleTaskGP(x, obj, outcome_transform=Standardize(m=obj.shape[-1]))
            fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
        t1 = time.perf_counter()
        ref = torch.as_tensor([-v for v in self.problem.ref_point] + [0.0], dtype=dt)
        partitioning = FastNondominatedPartitioning(ref_point=ref, Y=obj)
        pending = np.hstack([history.pending_u, history.pending_s[:, None]])
        problem = self.problem

        def cost_call(xs: torch.Tensor) -> torch.Tensor:
            s = xs[..., -1].detach().reshape(-1).numpy()
            return torch.as_tensor(problem.relative_cost(s), dtype=dt).reshape((*xs.shape[:-1], 1))

        acq = MOMF(model=model, ref_point=ref, partitioning=partitioning,
                   sampler=SobolQMCNormalSampler(sample_shape=torch.Size([MOMF_MC_SAMPLES]), seed=seed),
                   X_pending=torch.as_tensor(pending, dtype=dt) if len(pending) else None, cost_call=cost_call)
        snap = _snapper(problem)
        cand_u = np.unique(np.vstack([snap(rng.random((self.cfg.num_candidates, problem.dim))), history.u[ok]]),
                           axis=0)
        zs = np.linspace(problem.min_fidelity, TOP_FIDELITY, self.cfg.fidelity_levels)
        xz = np.hstack([np.repeat(cand_u, len(zs), axis=0), np.tile(zs, len(cand_u))[:, None]])
        with torch.no_grad():
            vals = torch.cat([acq(torch.as_tensor(chunk, dtype=dt)[:, None, :])
                              for chunk in np.array_split(xz, max(1, len(xz) // 512))]).numpy()
        i = int(np.argmax(vals))
        t2 = time.perf_counter()
        return Proposal(xz[i, :-1].copy(), float(xz[i, -1]), fit_s=t1 - t0, acq_s=t2 - t1, score=float(vals[i]),
                        cpu_s=time.process_time() - c0)


def _nd_rank(f: np.ndarray) -> np.ndarray:
    """Non-dominated rank of each row of ``f (n, m)`` (0: the front)."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    rank = np.empty(len(f))
    for r, idx in enumerate(NonDominatedSorting().do(f)):
        rank[idx] = r
    return rank


def _snapper(problem: Problem) -> Callable[[np.ndarray], np.ndarray]:
    return lambda u: problem.to_unit(problem.from_unit(u))


def hv_config(acq: AcquisitionConfig | None) -> AcquisitionConfig:
    """CF-MESMO-HV's acquisition settings: ``acq`` with the EHVI top-fidelity choice and :data:`HV_PRUNE_XI`.

    Other combinations: method ``cfmesmo`` with an ``AcquisitionConfig`` that sets them.
    """
    return replace(acq or AcquisitionConfig(), top_choice="ehvi", prune_xi=HV_PRUNE_XI)


def make_method(name: str, problem: Problem, init_u: np.ndarray, budget: float, seed: int,
                acq: AcquisitionConfig | None = None):
    """The proposer for method ``name`` (one of :data:`METHODS`)."""
    if name == "cfmesmo":
        return Mesmo(problem, multi_fidelity=True, cfg=acq)
    if name == "cfmesmo-hv":
        return Mesmo(problem, multi_fidelity=True, cfg=hv_config(acq))
    if name == "mesmo":
        return Mesmo(problem, multi_fidelity=False, cfg=acq)
    if name == "momf":
        return Momf(problem, cfg=acq)
    if name == "nsga2":
        return Nsga2Search(problem, init_u, budget, seed)
    if name == "random":
        return RandomSearch(problem)
    raise ValueError(f"unknown method {name!r}: choose one of {', '.join(METHODS)}")
