"""CF-MESMO's acquisition: information about the top-fidelity Pareto front per unit cost.

As in the authors' iMOCA code (REFERENCE.md): per Pareto-front sample ``s`` and objective ``j``,
``y*_js`` is the best value on a front sampled at the top fidelity (random-Fourier-feature posterior
samples, NSGA-II on each). At the top fidelity the information is MESMO's,
``sum_j gamma phi(gamma) / (2 Phi(gamma)) - ln Phi(gamma)`` with ``gamma = (mu(x, 1) - y*) / sigma(x, 1)``
(objectives minimized). At a lower fidelity ``z`` the correlation-aware form ("EG") uses the
posterior correlation ``rho`` of ``f(x, z)`` with ``f(x, 1)``: the information is
``1/2 ln(2 pi e) - H[p]`` with ``p(u) = phi(u) Phi((gamma - rho u) / sqrt(1 - rho^2)) / Phi(gamma)``,
integrated numerically. Scores are averaged over samples, summed over objectives and divided by
the cost; BOCA-style pruning drops a lower fidelity where every objective's posterior sd there is
below ``xi (c(z) / c(1))^(1 / (d + 3))``.

The truncated-Gaussian approximation ("TG": MESMO's formula with ``mu(x, z), sigma(x, z)``) is
kept as an option for comparison; divided by cost it collapses to the cheapest fidelity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.problem import Problem as PymooProblem
from pymoo.optimize import minimize
from scipy.special import log_ndtr

from .surrogate import ObjectiveModels

INFO_GAINS = ("eg", "tg")
#: How the design is chosen once the top fidelity is: by information (the paper's) or by EHVI (improvement.py).
TOP_CHOICES = ("info", "ehvi")
HALF_LOG_2PI_E = 0.5 * np.log(2 * np.pi * np.e)
#: gamma is clipped from below: Phi(gamma) underflows and the point carries no information there.
GAMMA_MIN = -8.0
#: The largest |rho| used in EG (rho = 1 is the top fidelity, handled by MESMO's closed form).
RHO_MAX = 0.999
#: Random designs per NSGA-II population member from which each front sample's start is picked.
START_POOL = 4
#: y* sits at least this far (standardized) below the best top-fidelity observation of each objective.
Y_STAR_MARGIN = 1e-2
#: ... and at least this many of the GP's noise sds below it.
Y_STAR_NOISE_SDS = 3.0
#: Noise floor (standardized variance) of the function samples' linear regression.
MIN_SAMPLE_NOISE = 1e-6


@dataclass(frozen=True)
class AcquisitionConfig:
    """Sizes of CF-MESMO's acquisition (small by default: it must stay cheap on 2 cores).

    Args:
        num_samples: Pareto-front samples per proposal.
        num_features: random Fourier features per objective sample.
        nsga_pop, nsga_gens: NSGA-II population and generations on each sample.
        num_candidates: random candidate designs (the sampled Pareto sets and the best points
            seen are added to them).
        fidelity_levels: fidelities tried per design, evenly spaced from the problem's lowest to 1.
        info_gain: ``"eg"`` (correlation-aware, the default) or ``"tg"`` (truncated Gaussian).
        prune_xi: BOCA's pruning constant ``xi`` (standardized units); 0 disables pruning. With
            0.1 CF-MESMO kept to cheap fidelities on momf-branin-currin for 40 evaluations (its
            posterior sd at cheap fidelities stays above the threshold); with 1.0 it moves to the
            top fidelity once the cheap fidelities are learned (about 25 evaluations).
        quad_points: grid points of EG's numerical integral over ``u`` in ``[-quad_range, quad_range]``.
        quad_range: half-width of that grid (standard deviations).
        top_choice: ``"info"`` (the paper's CF-MESMO: the design with the most information per
            cost) or ``"ehvi"`` (an extension: when the information per cost picks the top
            fidelity, the design is the one with the largest expected hypervolume improvement
            over the evaluated top-fidelity front; see ``improvement.py``).
        ehvi_samples: quasi-MC samples of that expected improvement.
    """

    num_samples: int = 3
    num_features: int = 256
    nsga_pop: int = 24
    nsga_gens: int = 10
    num_candidates: int = 256
    fidelity_levels: int = 8
    info_gain: str = "eg"
    prune_xi: float = 1.0
    quad_points: int = 121
    quad_range: float = 8.0
    top_choice: str = "info"
    ehvi_samples: int = 128

    def __post_init__(self) -> None:
        for name in ("num_samples", "num_features", "nsga_pop", "nsga_gens", "num_candidates", "quad_points",
                     "ehvi_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, not {getattr(self, name)}")
        if self.fidelity_levels < 2:
            raise ValueError(f"fidelity_levels must be >= 2 (the lowest and the top), not {self.fidelity_levels}")
        if self.info_gain not in INFO_GAINS:
            raise ValueError(f"info_gain must be one of {INFO_GAINS}, not {self.info_gain!r}")
        if self.top_choice not in TOP_CHOICES:
            raise ValueError(f"top_choice must be one of {TOP_CHOICES}, not {self.top_choice!r}")
        if self.prune_xi < 0:
            raise ValueError(f"prune_xi must be >= 0, not {self.prune_xi}")


class RffSample:
    """One posterior function sample per objective, as random Fourier features + Bayesian linear regression.

    ``g_j(a) = phi_j(a)^T theta_j`` with ``phi_j(a) = sqrt(2 s2 / D) cos(W a + b)``, ``W`` rows
    ``N(0, diag(1 / l^2))``, ``theta_j`` drawn from its Gaussian posterior given the training data.
    """

    def __init__(self, models: ObjectiveModels, num_features: int, rng: np.random.Generator) -> None:
        self.params: list[tuple[np.ndarray, np.ndarray, float, np.ndarray]] = []
        x = models.train_x
        for j in range(models.train_y.shape[1]):
            ls, s2, noise = models.kernel_params(j)
            w = rng.standard_normal((num_features, x.shape[1])) / ls
            b = rng.uniform(0.0, 2 * np.pi, num_features)
            scale = np.sqrt(2.0 * s2 / num_features)
            phi = scale * np.cos(x @ w.T + b)  # (n, D)
            noise = max(noise, MIN_SAMPLE_NOISE)
            # Matheron's rule in weight space (exact for the BLR posterior, O(n^2 D) with n < D):
            # theta = theta0 + Phi^T (Phi Phi^T + noise I)^-1 (y - Phi theta0 - eps).
            theta0 = rng.standard_normal(num_features)
            eps = np.sqrt(noise) * rng.standard_normal(len(x))
            gram = phi @ phi.T + noise * np.eye(len(x))
            theta = theta0 + phi.T @ np.linalg.solve(gram, models.train_y[:, j] - phi @ theta0 - eps)
            self.params.append((w, b, scale, theta))

    def __call__(self, xz: np.ndarray) -> np.ndarray:
        """Sampled standardized objectives at ``xz (n, d + 1)``: ``(n, m)`` float64."""
        return np.stack([scale * np.cos(xz @ w.T + b) @ theta for w, b, scale, theta in self.params], axis=1)


class _SampleProblem(PymooProblem):
    def __init__(self, sample: RffSample, d: int, snap: Callable[[np.ndarray], np.ndarray]) -> None:
        super().__init__(n_var=d, n_obj=len(sample.params), xl=0.0, xu=1.0)
        self.sample, self.snap = sample, snap

    def _evaluate(self, x, out, *args, **kwargs):
        u = self.snap(x)
        out["F"] = self.sample(np.hstack([u, np.ones((len(u), 1))]))


def sample_fronts(models: ObjectiveModels, cfg: AcquisitionConfig, rng: np.random.Generator,
                  snap: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Pareto fronts of posterior samples at the top fidelity.

    Args:
        models: fitted (possibly conditioned) GPs.
        cfg: acquisition sizes.
        rng: the proposal's generator.
        snap: unit-cube designs to the unit image of their rounded designs, ``(n, d) -> (n, d)``.

    Returns:
        ``y_star (S, m)`` float64: per sample, each objective's best value on its front
        (standardized); ``pareto_x (k, d)`` float64: the union of the sampled Pareto sets.
    """
    d = models.train_x.shape[1] - 1
    minima, sets = [], []
    for _ in range(cfg.num_samples):
        sample = RffSample(models, cfg.num_features, rng)
        # NSGA-II starts from the sample's best designs among the training designs and random
        # ones (few generations then suffice); their values also bound y* from above.
        start = np.vstack([models.train_x[:, :-1], snap(rng.random((START_POOL * cfg.nsga_pop, d)))])
        f_start = sample(np.hstack([start, np.ones((len(start), 1))]))
        order = np.argsort(_rank(f_start), kind="stable")[: cfg.nsga_pop]
        algo = NSGA2(pop_size=cfg.nsga_pop, sampling=start[order])
        res = minimize(_SampleProblem(sample, d, snap), algo, ("n_gen", cfg.nsga_gens),
                       seed=int(rng.integers(2**31 - 1)), verbose=False)
        front = np.atleast_2d(res.F)
        minima.append(np.minimum(front.min(axis=0), f_start.min(axis=0)))
        sets.append(snap(np.atleast_2d(res.X)))
    y_star = np.asarray(minima)
    # The front's minima cannot be above what was already observed at the top fidelity (the
    # standard max-value-entropy clamp): otherwise known points look informative.
    top = models.train_x[:, -1] >= 1.0
    if np.any(top):
        # The margin is at least a few noise sds: at an observed extreme the posterior sd is about
        # the noise sd, and a margin below it would keep that known point looking informative.
        noise_sd = np.sqrt([models.kernel_params(j)[2] for j in range(models.train_y.shape[1])])
        margin = np.maximum(Y_STAR_MARGIN, Y_STAR_NOISE_SDS * noise_sd)
        y_star = np.minimum(y_star, models.train_y[top].min(axis=0) - margin)
    return y_star, np.vstack(sets)


def _rank(f: np.ndarray) -> np.ndarray:
    """Non-dominated rank of each row of ``f (n, m)`` (0: the front), ties broken by the objectives' sum."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    rank = np.empty(len(f))
    for r, idx in enumerate(NonDominatedSorting().do(f)):
        rank[idx] = r
    return rank + 1e-9 * (f - f.min(axis=0)).sum(axis=1) / max(1.0, float(np.ptp(f)))


def mesmo_information(gamma: np.ndarray) -> np.ndarray:
    """MESMO's information at the top fidelity, elementwise: ``gamma phi / (2 Phi) - ln Phi``."""
    g = np.maximum(gamma, GAMMA_MIN)
    log_cdf = log_ndtr(g)
    ratio = np.exp(-0.5 * g**2 - 0.5 * np.log(2 * np.pi) - log_cdf)  # phi / Phi
    return g * ratio / 2.0 - log_cdf


def eg_information(gamma: np.ndarray, rho: np.ndarray, cfg: AcquisitionConfig) -> np.ndarray:
    """Correlation-aware information of a lower-fidelity observation, elementwise.

    ``1/2 ln(2 pi e) - H[p]``, ``p(u) = phi(u) Phi((gamma - rho u) / sqrt(1 - rho^2)) / Phi(gamma)``,
    by a Riemann sum on a fixed grid (the density is normalized on the grid).

    Args:
        gamma: ``(...)`` float64 standardized distance of the top-fidelity mean to ``y*``.
        rho: ``(...)`` float64 correlation of the low- and top-fidelity values (same shape).
    """
    g = np.maximum(gamma, GAMMA_MIN)[..., None]
    r = np.clip(rho, -RHO_MAX, RHO_MAX)[..., None]
    u = np.linspace(-cfg.quad_range, cfg.quad_range, cfg.quad_points)
    du = u[1] - u[0]
    logp = -0.5 * u**2 - 0.5 * np.log(2 * np.pi) + log_ndtr((g - r * u) / np.sqrt(1.0 - r**2))
    logp = logp - logp.max(axis=-1, keepdims=True)
    p = np.exp(logp)
    z = p.sum(axis=-1, keepdims=True) * du
    p = p / z
    logp = logp - np.log(z)
    entropy = -(p * logp).sum(axis=-1) * du
    return np.maximum(HALF_LOG_2PI_E - entropy, 0.0)


def information(post: tuple[np.ndarray, ...], xz: np.ndarray, y_star: np.ndarray,
                cfg: AcquisitionConfig) -> np.ndarray:
    """Information about the top-fidelity Pareto front of observing each candidate.

    Args:
        post: ``ObjectiveModels.joint_top(xz)``: ``mu_z, sd_z, mu_1, sd_1, rho``, each ``(n, m)``.
        xz: ``(n, d + 1)`` float64 candidates (fidelity last).
        y_star: ``(S, m)`` float64 sampled front minima (standardized).
        cfg: acquisition settings.

    Returns:
        ``(n,)`` float64, averaged over samples and summed over objectives.
    """
    mu_z, sd_z, mu_1, sd_1, rho = post
    top = xz[:, -1] >= 1.0
    gamma_top = (mu_1[None] - y_star[:, None, :]) / sd_1[None]  # (S, n, m)
    info = np.zeros(len(xz))
    if np.any(top):
        info[top] = mesmo_information(gamma_top[:, top]).sum(axis=-1).mean(axis=0)
    low = ~top
    if np.any(low):
        if cfg.info_gain == "tg":
            gamma_low = (mu_z[None, low] - y_star[:, None, :]) / sd_z[None, low]
            info[low] = mesmo_information(gamma_low).sum(axis=-1).mean(axis=0)
        else:
            r = np.broadcast_to(rho[None, low], gamma_top[:, low].shape)
            info[low] = eg_information(gamma_top[:, low], r, cfg).sum(axis=-1).mean(axis=0)
    return info


def keep_fidelity(sd_z: np.ndarray, rel_cost: np.ndarray, top: np.ndarray, d: int, xi: float) -> np.ndarray:
    """BOCA-style pruning: a lower fidelity stays where some objective's sd exceeds ``xi (c_z/c_1)^(1/(d+3))``.

    Args:
        sd_z: ``(n, m)`` float64 standardized posterior sd at the candidates.
        rel_cost: ``(n,)`` cost in top-fidelity units.
        top: ``(n,)`` bool, candidates at the top fidelity (always kept).
        d: design dimension.
        xi: the pruning constant.

    Returns:
        ``(n,)`` bool.
    """
    threshold = xi * rel_cost ** (1.0 / (d + 3))
    return top | (sd_z.max(axis=1) > threshold)
