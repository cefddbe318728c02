"""Two workers on a local Ray: evaluations run as Ray tasks, proposals made with pending points in flight."""

from __future__ import annotations

import numpy as np

from vitforge.sw.coopt import optimize
from vitforge.sw.coopt.executors import RAY_AUTH_ENV
from vitforge.sw.coopt.loop import load_state

from .conftest import SMALL_ACQ


def test_cfmesmo_on_two_ray_workers(tmp_path, monkeypatch):
    import ray

    monkeypatch.delenv(RAY_AUTH_ENV, raising=False)
    res = optimize("momf-branin-currin", method="cfmesmo", budget=5, seed=0, workers=2, out=tmp_path / "run",
                   max_evals=9, acquisition=SMALL_ACQ)
    assert not ray.is_initialized()  # the pool it started is shut down
    assert len(res.evaluations) == 9 and all(e.ok for e in res.evaluations)
    x, s, y, _ = res.arrays()
    np.testing.assert_allclose(y, res.problem.evaluate(x, s))  # the workers computed the true values
    state = load_state(tmp_path / "run")
    # Every model-based proposal after the first was made while another evaluation was in flight.
    assert len(state["proposals"]) == 9 and not state["pending"]
    assert len({(*p["u"], p["s"]) for p in state["proposals"]}) == 9
