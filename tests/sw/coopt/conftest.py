"""Shared pieces of the co-optimization tests: a cheap two-objective problem and small acquisition sizes."""

from __future__ import annotations

import numpy as np
import pytest

from vitforge.sw.coopt.acquisition import AcquisitionConfig
from vitforge.sw.coopt.problem import Problem

#: Acquisition sizes that keep a proposal well under a second in tests.
SMALL_ACQ = AcquisitionConfig(num_samples=2, num_features=64, nsga_pop=12, nsga_gens=4, num_candidates=64,
                              fidelity_levels=4)


def toy_objectives(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Two conflicting objectives on [0, 1]^2; the fidelity shifts the first one."""
    f0 = (x[:, 0] - 0.2 * (1.0 - s)) ** 2 + 0.1 * x[:, 1]
    f1 = (x[:, 0] - 1.0) ** 2 + 0.1 * (1.0 - x[:, 1])
    return np.stack([f0, f1], axis=1)


def toy_cost(s: np.ndarray) -> np.ndarray:
    return 0.05 + s


def make_toy(**kw) -> Problem:
    return Problem(bounds=[(0.0, 1.0), (0.0, 1.0)], objectives=toy_objectives, cost=toy_cost,
                   ref_point=[1.2, 1.2], name="toy", **kw)


@pytest.fixture
def toy() -> Problem:
    return make_toy()
