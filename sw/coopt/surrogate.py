"""The surrogate: one GP per objective over (design, fidelity), fitted with BoTorch/GPyTorch.

Inputs are the unit cube ``[0, 1]^d`` with the fidelity appended as the last column; outputs are
standardized per objective. Each GP is a ``SingleTaskGP`` whose covariance is
``ScaleKernel(RBF(x) * RBF(s))``: an ARD RBF over the design times an RBF over the fidelity, the
kernel of the authors' iMOCA code.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

# linear_operator (GPyTorch's dependency) decorates functions with torch.jit.script at import, which
# torch 2.13 deprecates: the warning is not ours, and it would stop a program that turns warnings into
# errors (the test suite does), so BoTorch and GPyTorch are imported under a filter for it alone.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=DeprecationWarning)
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from gpytorch.kernels import RBFKernel, ScaleKernel
    from gpytorch.mlls import ExactMarginalLogLikelihood
    from gpytorch.priors import GammaPrior

#: A floor on the GP's noise variance (standardized units): test functions are noise-free.
MIN_NOISE = 1e-6
DTYPE = torch.float64
#: L-BFGS iterations per GP fit (bounds the proposal's overhead; the fits converge well before).
FIT_MAXITER = 100


@dataclass
class ObjectiveModels:
    """Fitted GPs (one per objective) and the standardization of their outputs.

    Attributes:
        gps: ``m`` fitted ``SingleTaskGP`` over ``(d + 1)``-dimensional inputs.
        y_mean, y_std: ``(m,)`` float64: ``y = y_mean + y_std * standardized``.
        train_x: ``(n, d + 1)`` float64 training inputs (unit cube, fidelity last).
        train_y: ``(n, m)`` float64 standardized training outputs.
    """

    gps: list[SingleTaskGP]
    y_mean: np.ndarray
    y_std: np.ndarray
    train_x: np.ndarray
    train_y: np.ndarray

    def kernel_params(self, j: int) -> tuple[np.ndarray, float, float]:
        """Objective ``j``'s ARD lengthscales ``(d + 1,)``, signal variance and noise variance."""
        gp = self.gps[j]
        prod = gp.covar_module.base_kernel
        ls_x = prod.kernels[0].lengthscale.detach().reshape(-1)
        ls_s = prod.kernels[1].lengthscale.detach().reshape(-1)
        ls = torch.cat([ls_x, ls_s]).numpy().astype(np.float64)
        return ls, float(gp.covar_module.outputscale.detach()), float(gp.likelihood.noise.detach().reshape(-1)[0])

    def joint_top(self, xz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Posterior at ``(x, z)`` and ``(x, 1)`` together, per objective.

        Args:
            xz: ``(n, d + 1)`` float64 candidates (fidelity last).

        Returns:
            ``mu_z, sd_z, mu_1, sd_1, rho``, each ``(n, m)`` float64 in standardized units;
            ``rho`` is the posterior correlation of ``f(x, z)`` with ``f(x, 1)``.
        """
        top = xz.copy()
        top[:, -1] = 1.0
        pair = torch.as_tensor(np.stack([xz, top], axis=1), dtype=DTYPE)  # (n, 2, d + 1)
        out = [[] for _ in range(5)]
        with torch.no_grad():
            for gp in self.gps:
                post = gp.posterior(pair)
                mean = post.mean.squeeze(-1)  # (n, 2)
                cov = post.distribution.covariance_matrix  # (n, 2, 2)
                var_z = cov[:, 0, 0].clamp_min(1e-12)
                var_1 = cov[:, 1, 1].clamp_min(1e-12)
                rho = (cov[:, 0, 1] / (var_z * var_1).sqrt()).clamp(-1.0, 1.0)
                for lst, v in zip(out, (mean[:, 0], var_z.sqrt(), mean[:, 1], var_1.sqrt(), rho), strict=True):
                    lst.append(v.numpy())
        return tuple(np.stack(v, axis=1) for v in out)  # type: ignore[return-value]

    def predict(self, xz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and sd in objective units at ``xz (n, d + 1)``: two ``(n, m)`` float64."""
        x = torch.as_tensor(xz, dtype=DTYPE)
        mus, sds = [], []
        with torch.no_grad():
            for gp in self.gps:
                post = gp.posterior(x)
                mus.append(post.mean.squeeze(-1).numpy())
                sds.append(post.variance.clamp_min(0).sqrt().squeeze(-1).numpy())
        return self.y_mean + self.y_std * np.stack(mus, 1), self.y_std * np.stack(sds, 1)

    def conditioned(self, pending_xz: np.ndarray) -> ObjectiveModels:
        """These models conditioned on pending points at their posterior mean (kriging believer).

        The fantasy observations shrink the variance near the pending points, so a batch or an
        asynchronous proposal does not pick the same point twice. Hyperparameters are kept.
        """
        if len(pending_xz) == 0:
            return self
        xp = torch.as_tensor(pending_xz, dtype=DTYPE)
        gps, ys = [], []
        with torch.no_grad():
            for gp in self.gps:
                yp = gp.posterior(xp).mean  # (p, 1)
                gps.append(gp.condition_on_observations(xp, yp))
                ys.append(yp.squeeze(-1).numpy())
        return ObjectiveModels(gps, self.y_mean, self.y_std, np.vstack([self.train_x, pending_xz]),
                               np.vstack([self.train_y, np.stack(ys, 1)]))


def _make_gp(x: torch.Tensor, y: torch.Tensor) -> SingleTaskGP:
    d = x.shape[-1] - 1
    covar = ScaleKernel(
        RBFKernel(ard_num_dims=d, active_dims=tuple(range(d)), lengthscale_prior=GammaPrior(3.0, 6.0))
        * RBFKernel(active_dims=(d,), lengthscale_prior=GammaPrior(3.0, 6.0)),
        outputscale_prior=GammaPrior(2.0, 0.15),
    )
    gp = SingleTaskGP(x, y, covar_module=covar)
    gp.likelihood.noise_covar.register_constraint("raw_noise", _noise_constraint())
    return gp


def _noise_constraint():
    from gpytorch.constraints import GreaterThan

    return GreaterThan(MIN_NOISE)


def fit_models(train_x: np.ndarray, train_y: np.ndarray, seed: int) -> ObjectiveModels:
    """Fit one GP per objective.

    Args:
        train_x: ``(n, d + 1)`` float64 inputs in the unit cube, fidelity last.
        train_y: ``(n, m)`` float64 objective values (finite).
        seed: seeds BoTorch's fitting retries (it draws restarts from torch's global generator,
            which is forked here so that the caller's global state is untouched).

    Returns:
        The fitted :class:`ObjectiveModels`.
    """
    y_mean = train_y.mean(axis=0)
    y_std = train_y.std(axis=0)
    y_std = np.where(y_std > 1e-12, y_std, 1.0)
    ys = (train_y - y_mean) / y_std
    x = torch.as_tensor(train_x, dtype=DTYPE)
    gps = []
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for j in range(train_y.shape[1]):
            gp = _make_gp(x, torch.as_tensor(ys[:, j : j + 1], dtype=DTYPE))
            fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp),
                             optimizer_kwargs={"options": {"maxiter": FIT_MAXITER}})
            gp.eval()
            gps.append(gp)
    return ObjectiveModels(gps, y_mean, y_std, np.asarray(train_x, dtype=np.float64), ys)
