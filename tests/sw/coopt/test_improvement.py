"""CF-MESMO-HV's top-fidelity choice: expected hypervolume improvement over the evaluated front."""

from __future__ import annotations

import numpy as np

from vitforge.sw.coopt.acquisition import AcquisitionConfig
from vitforge.sw.coopt.improvement import MIN_MC_SAMPLES, expected_hv_improvement, predicted_pareto_set, samples_for
from vitforge.sw.coopt.methods import HV_PRUNE_XI, History, Mesmo, make_method
from vitforge.sw.coopt.problem import Problem
from vitforge.sw.coopt.surrogate import fit_models

from .conftest import SMALL_ACQ

REF = [1.1, 1.1]
#: The evaluated front: points on f0 + f1 = 1 with a wide gap between 0.2 and 0.8.
FRONT_U = np.array([0.0, 0.1, 0.2, 0.8, 0.9, 1.0])


def line(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """A linear front: ``f = (x0, 1 - x0)``; the fidelity adds a small offset to both."""
    off = 0.05 * (1.0 - s)
    return np.stack([x[:, 0] + off, 1.0 - x[:, 0] + off], axis=1)


def _models(seed: int = 0):
    rng = np.random.default_rng(seed)
    u = np.concatenate([np.linspace(0.0, 1.0, 11), rng.random(6)])[:, None]
    s = np.concatenate([np.ones(11), rng.random(6)])
    return fit_models(np.hstack([u, s[:, None]]), line(u, s), seed=seed)


def test_the_largest_improvement_fills_the_biggest_gap():
    models = _models()
    front = line(FRONT_U[:, None], np.ones(len(FRONT_U)))
    cand = np.array([[0.15], [0.5], [0.35], [0.85]])
    v = expected_hv_improvement(models, cand, front, REF, np.zeros((0, 1)), mc_samples=64, seed=0)
    # On the line, a point at a inside the gap [0.2, 0.8] adds (a - 0.2) (0.8 - a): 0.09 at the middle.
    assert int(np.argmax(v)) == 1
    assert v[1] > v[2] > max(v[0], v[3])


def test_a_pending_point_in_the_gap_moves_the_choice():
    models = _models()
    front = line(FRONT_U[:, None], np.ones(len(FRONT_U)))
    cand = np.array([[0.15], [0.5], [0.3]])
    free = expected_hv_improvement(models, cand, front, REF, np.zeros((0, 1)), mc_samples=64, seed=0)
    held = expected_hv_improvement(models, cand, front, REF, np.array([[0.5]]), mc_samples=64, seed=0)
    assert int(np.argmax(free)) == 1
    # BoTorch scores the candidate together with the pending points: at 0.5 the pair adds what
    # 0.5 alone adds, so 0.3, which adds to it, wins.
    assert int(np.argmax(held)) == 2
    assert held[2] > free[1]


def test_an_empty_front_scores_the_point_alone():
    # With nothing evaluated at the top fidelity the improvement is the point's own hypervolume:
    # on the line it is (1.1 - a) (0.1 + a), largest at a = 0.5.
    models = _models()
    cand = np.array([[0.0], [0.5], [0.9]])
    v = expected_hv_improvement(models, cand, np.zeros((0, 2)), REF, np.zeros((0, 1)), mc_samples=64, seed=0)
    assert int(np.argmax(v)) == 1


def test_the_predicted_pareto_set_spans_the_line():
    models = _models()
    pset = predicted_pareto_set(models, lambda u: np.clip(u, 0.0, 1.0), pop=16, gens=8, seed=0)
    assert pset.min() < 0.15 and pset.max() > 0.85


def test_cfmesmo_hv_puts_its_top_fidelity_evaluation_in_the_gap():
    problem = Problem(bounds=[(0.0, 1.0)], objectives=line, cost=lambda s: 0.05 + s, ref_point=REF, name="line")
    rng = np.random.default_rng(1)
    u = np.concatenate([FRONT_U, rng.random(8)])[:, None]
    s = np.concatenate([np.ones(len(FRONT_U)), rng.uniform(0.0, 0.6, 8)])
    hist = History(u, s, line(u, s), np.ones(len(s), bool), np.zeros((0, 1)), np.zeros(0))
    method = Mesmo(problem, multi_fidelity=True, cfg=AcquisitionConfig(**{**SMALL_ACQ.__dict__, "top_choice": "ehvi"}))
    models = fit_models(np.hstack([u, s[:, None]]), line(u, s), seed=0)
    seen = {tuple(r) for r in np.hstack([u, s[:, None]]).round(12)}
    cand = np.linspace(0.0, 1.0, 21)[:, None]
    pick, value = method.improving_design(models, hist, cand, seen, np.random.default_rng(0))
    assert 0.35 <= pick[0] <= 0.65, pick
    assert np.isfinite(value)


def test_method_names_select_the_top_fidelity_choice(toy):
    init = np.zeros((0, 2))
    assert make_method("cfmesmo", toy, init, 10, 0).cfg.top_choice == "info"
    assert make_method("cfmesmo-hv", toy, init, 10, 0, SMALL_ACQ).cfg.top_choice == "ehvi"
    hv = make_method("cfmesmo-hv", toy, init, 10, 0, SMALL_ACQ).cfg
    assert hv.num_candidates == SMALL_ACQ.num_candidates and hv.prune_xi == HV_PRUNE_XI != SMALL_ACQ.prune_xi


def test_a_cfmesmo_hv_run_is_reproducible_and_reaches_the_top_fidelity(toy):
    from vitforge.sw.coopt.loop import optimize

    acq = AcquisitionConfig(**{**SMALL_ACQ.__dict__, "prune_xi": 10.0})  # prunes cheap fidelities: goes to s = 1
    a = optimize(toy, method="cfmesmo-hv", budget=30, seed=0, max_evals=10, acquisition=acq)
    b = optimize(toy, method="cfmesmo-hv", budget=30, seed=0, max_evals=10, acquisition=acq)
    assert [(e.x, e.fidelity, e.y) for e in a.evaluations] == [(e.x, e.fidelity, e.y) for e in b.evaluations]
    assert sum(e.fidelity >= 1.0 for e in a.evaluations[6:]) >= 2


def test_fewer_mc_samples_with_more_objectives():
    assert [samples_for(128, m) for m in (1, 2, 3, 4)] == [128, 128, 64, 32]
    assert samples_for(128, 9) == MIN_MC_SAMPLES
