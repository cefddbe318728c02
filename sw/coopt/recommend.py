"""The recommended set: the model's predicted Pareto set at the top fidelity, to be evaluated for real.

The GPs are fitted on every successful evaluation; NSGA-II runs on their posterior mean at the top
fidelity; ``k`` designs spread along the predicted front (evenly in the first objective) are the
recommendation. The comparison evaluates them at the top fidelity and reports their hypervolume and
their extra cost apart from the run's budget.
"""

from __future__ import annotations

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.problem import Problem as PymooProblem
from pymoo.optimize import minimize

from .loop import OptimizationResult
from .problem import TOP_FIDELITY, Problem
from .surrogate import ObjectiveModels, fit_models

#: Methods whose runs have a model to recommend from.
MODEL_METHODS = frozenset({"cfmesmo", "cfmesmo-hv", "mesmo", "momf"})
RECOMMEND_POP = 40
RECOMMEND_GENS = 40


class _MeanProblem(PymooProblem):
    def __init__(self, models: ObjectiveModels, problem: Problem) -> None:
        super().__init__(n_var=problem.dim, n_obj=problem.num_objectives, xl=0.0, xu=1.0)
        self.models, self.problem = models, problem

    def _evaluate(self, u, out, *args, **kwargs):
        u = self.problem.to_unit(self.problem.from_unit(u))
        out["F"] = self.models.predict(np.hstack([u, np.ones((len(u), 1))]))[0]


def recommend(problem: Problem, result: OptimizationResult, k: int, seed: int) -> np.ndarray:
    """Up to ``k`` designs ``(k', d)`` float64 (rounded) on the model's predicted top-fidelity front."""
    x, s, y, _ = result.arrays()
    ok = np.all(np.isfinite(y), axis=1)
    u = problem.to_unit(x[ok])
    models = fit_models(np.hstack([u, s[ok, None]]), y[ok], seed=seed)
    res = minimize(_MeanProblem(models, problem), NSGA2(pop_size=RECOMMEND_POP), ("n_gen", RECOMMEND_GENS),
                   seed=seed, verbose=False)
    front_u = np.unique(problem.to_unit(problem.from_unit(np.atleast_2d(res.X))), axis=0)
    pred = models.predict(np.hstack([front_u, np.full((len(front_u), 1), TOP_FIDELITY)]))[0]
    order = np.argsort(pred[:, 0], kind="stable")
    pick = order[np.unique(np.linspace(0, len(order) - 1, min(k, len(order))).round().astype(int))]
    return problem.from_unit(front_u[pick])
