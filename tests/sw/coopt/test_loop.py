"""The loop: evaluations in order with costs, shared initial designs, failures, budgets, determinism, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from vitforge.sw.coopt import Problem, optimize
from vitforge.sw.coopt.loop import STATE_FILE, initial_design, load_state, resume

from .conftest import SMALL_ACQ, make_toy, toy_cost, toy_objectives


def test_evaluations_hold_every_x_fidelity_y_and_cost_in_order(toy):
    res = optimize(toy, method="random", budget=5, seed=3)
    assert [e.id for e in res.evaluations] == list(range(len(res.evaluations)))
    x, s, y, c = res.arrays()
    np.testing.assert_allclose(y, toy_objectives(x, s))
    np.testing.assert_allclose(c, toy.relative_cost(s))
    assert res.spent >= 5 and res.spent - c[-1] < 5  # stops once the budget is reached


@pytest.mark.parametrize("method", ["random", "nsga2", "mesmo"])
def test_single_fidelity_methods_share_the_initial_design_at_the_top(toy, method):
    u, s = initial_design(toy, 6, seed=1, multi_fidelity=False)
    res = optimize(toy, method=method, budget=7, seed=1, n_init=6, acquisition=SMALL_ACQ)
    x, fid, _, _ = res.arrays()
    np.testing.assert_allclose(toy.to_unit(x[:6]), u)
    assert np.all(fid == 1.0) and np.all(s == 1.0)


def test_cfmesmo_uses_cheap_fidelities_and_the_same_seed_gives_the_same_run(toy):
    a = optimize(toy, method="cfmesmo", budget=20, seed=0, max_evals=10, acquisition=SMALL_ACQ)
    b = optimize(toy, method="cfmesmo", budget=20, seed=0, max_evals=10, acquisition=SMALL_ACQ)
    assert [e.x for e in a.evaluations] == [e.x for e in b.evaluations]
    assert [e.fidelity for e in a.evaluations] == [e.fidelity for e in b.evaluations]
    _, s, _, _ = a.arrays()
    assert np.any(s < 1.0)
    assert len(a.overhead) == 10 - 6 and all(f > 0 and q > 0 for f, q in a.overhead)


def test_failed_and_nan_evaluations_are_recorded_and_the_run_goes_on():
    def f(x, s):
        if x[0, 0] > 0.7:
            raise RuntimeError("simulator crashed")
        if x[0, 0] < 0.2:
            return np.full((1, 2), np.nan)
        return toy_objectives(x, s)

    p = Problem(bounds=[(0, 1)] * 2, objectives=f, cost=toy_cost, ref_point=[1.2, 1.2])
    res = optimize(p, method="random", budget=12, seed=0)
    errors = [e.error for e in res.evaluations if not e.ok]
    assert any("RuntimeError: simulator crashed" in e for e in errors)
    assert any("non-finite objectives" in e for e in errors)
    assert sum(e.ok for e in res.evaluations) > 0 and res.spent >= 12


@pytest.mark.parametrize("kw, match", [
    ({"budget": 0}, "budget must be a positive number of top-fidelity evaluations, not 0"),
    ({"budget": -1.5}, "not -1.5"),
    ({"method": "bayes"}, "unknown method 'bayes': choose one of cfmesmo, cfmesmo-hv, mesmo, momf, nsga2, random"),
    ({"workers": 0}, "workers must be >= 1, not 0"),
])
def test_bad_run_arguments_are_named(toy, kw, match):
    with pytest.raises(ValueError, match=match):
        optimize(toy, **{"method": "random", "budget": 3, **kw})


def test_objectives_of_the_wrong_shape_stop_the_run_at_once():
    p = Problem(bounds=[(0, 1)] * 2, objectives=lambda x, s: x[:, :1], cost=toy_cost, ref_point=[1, 1])
    with pytest.raises(ValueError, match=r"must return shape \(1, 2\) .* not \(1, 1\)"):
        optimize(p, method="random", budget=3)


def test_a_hopeless_reference_point_is_refused_after_the_initial_design():
    p = Problem(bounds=[(0, 1)] * 2, objectives=toy_objectives, cost=toy_cost, ref_point=[-5, -5])
    with pytest.raises(ValueError, match=r"ref_point \[-5.0, -5.0\] .* pick a point slightly worse"):
        optimize(p, method="mesmo", budget=10, seed=0, acquisition=SMALL_ACQ)


def test_state_is_saved_after_each_evaluation_and_a_finished_run_resumes_to_itself(tmp_path, toy):
    res = optimize(toy, method="nsga2", budget=20, seed=2, out=tmp_path / "run")
    state = load_state(tmp_path / "run")
    assert state["done"] and not state["pending"] and len(state["evaluations"]) == len(res.evaluations)
    again = resume(tmp_path / "run", problem=toy)
    assert [e.x for e in again.evaluations] == [e.x for e in res.evaluations]
    with pytest.raises(ValueError, match="exists: use resume"):
        optimize(toy, method="nsga2", budget=20, seed=2, out=tmp_path / "run")
    with pytest.raises(ValueError, match="pass it: resume"):
        resume(tmp_path / "run")


def test_resume_after_a_partial_state_repeats_nothing(tmp_path, toy):
    full = optimize(toy, method="nsga2", budget=24, seed=5, out=tmp_path / "full")
    # Cut the saved state back to 13 evaluations with one pending, as a kill would leave it.
    state = json.loads((tmp_path / "full" / STATE_FILE).read_text())
    state["evaluations"] = state["evaluations"][:13]
    state["proposals"] = state["proposals"][:14]
    state["pending"] = [13]
    state["done"] = False
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / STATE_FILE).write_text(json.dumps(state))
    resumed = resume(tmp_path / "cut", problem=toy)
    assert [(e.id, e.x, e.y) for e in resumed.evaluations] == [(e.id, e.x, e.y) for e in full.evaluations]


def _count(path) -> int:
    try:
        return len(json.loads(path.read_text())["evaluations"])
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def test_a_killed_run_resumes_to_the_same_evaluations_as_an_unkilled_one(tmp_path):
    """SIGKILL a `vitforge coopt run` mid-way (one worker), resume it, compare with a run never killed."""
    args = ["--problem", "momf-branin-currin", "--method", "cfmesmo", "--budget", "3", "--seed", "4",
            "--max-evals", "8"]
    cli = [sys.executable, "-m", "vitforge.cli", "coopt", "run"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cli, *args, "--out", str(killed), "--json"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _count(killed / STATE_FILE) < 7 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_killed = _count(killed / STATE_FILE)
    assert n_killed == 7
    subprocess.run([*cli[:-1], "resume", str(killed), "--json"], env=env, check=True, capture_output=True)
    full = tmp_path / "full"
    subprocess.run([*cli, *args, "--out", str(full), "--json"], env=env, check=True, capture_output=True)
    a, b = load_state(killed), load_state(full)
    assert [(e["id"], e["x"], e["fidelity"], e["y"]) for e in a["evaluations"]] == \
        [(e["id"], e["x"], e["fidelity"], e["y"]) for e in b["evaluations"]]
    assert len(a["evaluations"]) == 8


def test_user_problem_with_one_worker_needs_no_ray(toy):
    import ray

    optimize(make_toy(), method="random", budget=2, seed=0)
    assert not ray.is_initialized()
