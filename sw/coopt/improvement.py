"""Where a top-fidelity evaluation adds most hypervolume: CF-MESMO-HV's choice of the design at ``s = 1``.

An extension of the paper's CF-MESMO (``AcquisitionConfig(top_choice="ehvi")``, method
``cfmesmo-hv``): the fidelity is still chosen by the information per unit cost, but when that
choice is the top fidelity the design is the candidate with the largest expected hypervolume
improvement (BoTorch's ``qLogExpectedHypervolumeImprovement``, Monte Carlo over the GPs' joint
posterior at ``s = 1``) over the front of the top-fidelity points evaluated so far, with the
pending top-fidelity points integrated out as ``X_pending``. The candidates are random designs,
the Pareto sets of the posterior samples and the Pareto set of the posterior mean at ``s = 1``
(NSGA-II on it). Only what the run has evaluated enters: the front is built from evaluated
values, the model from evaluated points.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.problem import Problem as PymooProblem
from pymoo.optimize import minimize

from .surrogate import DTYPE, ObjectiveModels

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=DeprecationWarning)
    from botorch.acquisition.multi_objective.logei import qLogExpectedHypervolumeImprovement
    from botorch.acquisition.multi_objective.objective import GenericMCMultiOutputObjective
    from botorch.models import ModelListGP
    from botorch.sampling import SobolQMCNormalSampler
    from botorch.utils.multi_objective.box_decompositions.non_dominated import FastNondominatedPartitioning
    from linear_operator.utils.warnings import NumericalWarning

#: Candidates scored per call of the acquisition (bounds the memory of the MC samples).
CHUNK = 256
#: The fewest quasi-MC samples: ``mc_samples`` is halved per objective beyond two (the hypervolume's
#: box decomposition, which each sample is scored against, grows with the number of objectives;
#: d = 8, m = 4 with 100 evaluations took 5.7 s CPU per proposal with 128 samples).
MIN_MC_SAMPLES = 16


class MeanProblem(PymooProblem):
    """The GPs' posterior mean at the top fidelity (objective units) as a pymoo problem over the unit cube."""

    def __init__(self, models: ObjectiveModels, snap: Callable[[np.ndarray], np.ndarray]) -> None:
        d = models.train_x.shape[1] - 1
        super().__init__(n_var=d, n_obj=models.train_y.shape[1], xl=0.0, xu=1.0)
        self.models, self.snap = models, snap

    def _evaluate(self, u, out, *args, **kwargs):
        u = self.snap(u)
        out["F"] = self.models.predict(np.hstack([u, np.ones((len(u), 1))]))[0]


def predicted_pareto_set(models: ObjectiveModels, snap: Callable[[np.ndarray], np.ndarray], pop: int, gens: int,
                         seed: int, start: np.ndarray | None = None) -> np.ndarray:
    """The Pareto set of the posterior mean at ``s = 1`` by NSGA-II: ``(k, d)`` float64 unit designs (snapped).

    Args:
        models: fitted GPs.
        snap: unit designs to the unit image of their rounded designs.
        pop, gens: NSGA-II's population and generations.
        seed: NSGA-II's seed.
        start: ``(pop, d)`` first population (default: pymoo's random sampling).
    """
    algo = NSGA2(pop_size=pop) if start is None else NSGA2(pop_size=pop, sampling=start)
    res = minimize(MeanProblem(models, snap), algo, ("n_gen", gens), seed=seed, verbose=False)
    return np.unique(snap(np.atleast_2d(res.X)), axis=0)


def samples_for(mc_samples: int, m: int) -> int:
    """Quasi-MC samples for ``m`` objectives: ``mc_samples`` for two, halved per further objective."""
    return max(MIN_MC_SAMPLES, mc_samples >> max(0, m - 2))


def expected_hv_improvement(models: ObjectiveModels, cand_u: np.ndarray, front_y: np.ndarray,
                            ref_point: Sequence[float], pending_u: np.ndarray, mc_samples: int,
                            seed: int) -> np.ndarray:
    """Log expected hypervolume improvement of evaluating each candidate design at the top fidelity.

    Args:
        models: fitted (possibly conditioned) GPs, one per objective (minimized).
        cand_u: ``(n, d)`` float64 unit candidate designs.
        front_y: ``(k, m)`` float64 objectives evaluated at the top fidelity so far (k may be 0).
        ref_point: ``m`` reference values (minimized objectives).
        pending_u: ``(p, d)`` float64 designs pending at the top fidelity (integrated out).
        mc_samples: quasi-MC samples of the joint posterior for two objectives (halved per further
            objective, at least :data:`MIN_MC_SAMPLES`).
        seed: the sampler's seed.

    Returns:
        ``(n,)`` float64 log EHVI (larger is better; ``-inf``-like where no improvement is possible).
    """
    m = models.train_y.shape[1]
    mean = torch.as_tensor(models.y_mean, dtype=DTYPE)
    std = torch.as_tensor(models.y_std, dtype=DTYPE)
    # BoTorch maximizes: the objective turns standardized GP outputs into negated objective values.
    objective = GenericMCMultiOutputObjective(lambda samples, X=None: -(mean + std * samples))
    ref = -torch.as_tensor(np.asarray(ref_point, dtype=np.float64), dtype=DTYPE)
    y = -torch.as_tensor(np.asarray(front_y, dtype=np.float64).reshape(-1, m), dtype=DTYPE)
    partitioning = FastNondominatedPartitioning(ref_point=ref, Y=y)
    top = lambda u: torch.as_tensor(np.hstack([u, np.ones((len(u), 1))]), dtype=DTYPE)  # noqa: E731
    acq = qLogExpectedHypervolumeImprovement(
        model=ModelListGP(*models.gps), ref_point=ref, partitioning=partitioning, objective=objective,
        sampler=SobolQMCNormalSampler(sample_shape=torch.Size([samples_for(mc_samples, m)]), seed=seed),
        X_pending=top(pending_u) if len(pending_u) else None)
    out = []
    # A candidate next to a pending point makes their joint covariance nearly singular; GPyTorch
    # then adds jitter and warns. That is the expected case (the candidate's improvement is then
    # about nil), not a fault, so that warning alone is silenced here.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="A not p.d., added jitter", category=NumericalWarning)
        for lo in range(0, len(cand_u), CHUNK):
            out.append(acq(top(cand_u[lo : lo + CHUNK])[:, None, :]).numpy())
    return np.concatenate(out) if out else np.zeros(0)

