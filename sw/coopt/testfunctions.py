"""BoTorch's multi-objective multi-fidelity test functions as :class:`Problem`s.

``MOMFBraninCurrin`` (d = 2) and ``MOMFPark`` (d = 4): the fidelity is their last input, both
objectives are minimized as BoTorch defines them (``negate=False``), the reference point is
BoTorch's ``[0, 0]`` and the known maximum hypervolumes are BoTorch's. The cost is the MOMF
tutorial's, ``exp(4.8 s)``: the lowest fidelity costs ``exp(-4.8) = 0.8%`` of the top one.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .problem import Problem

# As in surrogate.py: BoTorch's import raises torch 2.13's torch.jit.script deprecation (not ours).
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=DeprecationWarning)
    from botorch.test_functions.multi_objective_multi_fidelity import MOMFBraninCurrin, MOMFPark

#: The MOMF tutorial's cost exponent: ``c(s) = exp(COST_EXPONENT * s)``.
COST_EXPONENT = 4.8


def exp_cost(fidelity: np.ndarray) -> np.ndarray:
    """``c(s) = exp(4.8 s)``: ``(n,)`` float64 -> ``(n,)`` float64."""
    return np.exp(COST_EXPONENT * np.asarray(fidelity, dtype=np.float64))


class _BotorchObjectives:
    """A picklable ``f(x, fidelity)`` over a BoTorch MOMF test function (minimized as defined)."""

    def __init__(self, cls: type) -> None:
        self.cls = cls

    def __call__(self, x: np.ndarray, fidelity: np.ndarray) -> np.ndarray:
        fn = self.cls(negate=False)
        xs = torch.as_tensor(np.hstack([x, fidelity[:, None]]), dtype=torch.float64)
        with torch.no_grad():
            return fn.evaluate_true(xs).numpy()


def _momf(cls: type, name: str) -> Problem:
    fn = cls(negate=False)
    d = fn.dim - 1
    return Problem(bounds=[(0.0, 1.0)] * d, objectives=_BotorchObjectives(cls), cost=exp_cost,
                   ref_point=fn.ref_point.tolist(), name=name,
                   objective_names=tuple(f"f{j}" for j in range(fn.num_objectives)), max_hv=float(fn.max_hv))


def branin_currin() -> Problem:
    """``momf-branin-currin``: d = 2, m = 2, known maximum hypervolume 0.5235514."""
    return _momf(MOMFBraninCurrin, "momf-branin-currin")


def park() -> Problem:
    """``momf-park``: d = 4, m = 2, known maximum hypervolume 0.0855193."""
    return _momf(MOMFPark, "momf-park")
