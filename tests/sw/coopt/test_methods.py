"""Proposers: pending points are conditioned on, NSGA-II waits for its generation, MOMF proposes in bounds."""

from __future__ import annotations

import numpy as np

from vitforge.sw.coopt.loop import initial_design
from vitforge.sw.coopt.methods import History, Mesmo, Momf, Nsga2Search
from vitforge.sw.coopt.surrogate import fit_models

from .conftest import SMALL_ACQ, toy_objectives


def _history(toy, n=8, seed=0, pending=()):
    u, s = initial_design(toy, n, seed, multi_fidelity=True)
    y = toy_objectives(toy.from_unit(u), s)
    pu = np.array([p[0] for p in pending]).reshape(-1, toy.dim)
    ps = np.array([p[1] for p in pending], dtype=np.float64)
    return History(u, s, y, np.ones(n, bool), pu, ps)


def test_conditioning_on_a_pending_point_shrinks_the_variance_there(toy):
    h = _history(toy)
    models = fit_models(np.hstack([h.u, h.s[:, None]]), h.y, seed=0)
    xz = np.array([[0.5, 0.5, 1.0]])
    _, sd = models.predict(xz)
    _, sd_pending = models.conditioned(xz).predict(xz)
    assert np.all(sd_pending < 0.2 * sd)


def test_a_pending_point_changes_the_next_proposal(toy):
    rng = lambda: np.random.default_rng(7)  # noqa: E731 - the same draws for both proposals
    method = Mesmo(toy, multi_fidelity=True, cfg=SMALL_ACQ)
    first = method.propose(_history(toy), rng())
    second = method.propose(_history(toy, pending=[(first.u, first.s)]), rng())
    assert not (np.allclose(first.u, second.u) and first.s == second.s)
    assert 0.0 <= first.s <= 1.0 and first.fit_s > 0 and first.acq_s > 0


def test_single_fidelity_mesmo_proposes_the_top_fidelity_only(toy):
    p = Mesmo(toy, multi_fidelity=False, cfg=SMALL_ACQ).propose(_history(toy), np.random.default_rng(0))
    assert p.s == 1.0


def test_momf_proposes_a_design_and_fidelity_in_bounds(toy):
    p = Momf(toy, cfg=SMALL_ACQ).propose(_history(toy), np.random.default_rng(0))
    assert np.all((p.u >= 0) & (p.u <= 1)) and 0.0 <= p.s <= 1.0 and np.isfinite(p.score)


def test_nsga2_hands_out_its_generation_then_waits(toy):
    init, _ = initial_design(toy, 6, 0, multi_fidelity=False)
    nsga = Nsga2Search(toy, init, budget=10, seed=0)
    assert nsga.pop_size == 8  # NSGA2_MIN_POP: the budget / 5 generations is smaller
    h = History(np.zeros((0, 2)), np.zeros(0), np.zeros((0, 2)), np.zeros(0, bool), np.zeros((0, 2)), np.zeros(0))
    for pid in range(8):
        p = nsga.propose(h, np.random.default_rng(pid))
        if pid < 6:
            np.testing.assert_allclose(p.u, init[pid])  # the shared initial design comes first
        h.proposals.append((pid, p.u, p.s))
    assert nsga.propose(h, np.random.default_rng(9)) is None  # generation 0 still pending
    for pid, u, s in h.proposals:
        h.results[pid] = toy_objectives(toy.from_unit(u[None]), np.array([s]))[0]
    nxt = nsga.propose(h, np.random.default_rng(10))
    assert nxt is not None and nsga.consumed == 8
