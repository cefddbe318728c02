"""Metrics: hypervolume of top-fidelity points only, cost to reach with censoring, censored quantiles."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vitforge.sw.coopt.metrics import censored_summary, cost_at_best, cost_to_reach, hv_curve, hypervolume


def test_hypervolume_of_two_points():
    # [0,1]x[0,1] box from (0.5, 0) and (0, 0.5) up to (1, 1): 0.5 + 0.5 - 0.25
    assert hypervolume(np.array([[0.5, 0.0], [0.0, 0.5]]), [1.0, 1.0]) == pytest.approx(0.75)
    assert hypervolume(np.array([[2.0, 0.0]]), [1.0, 1.0]) == 0.0


def test_hv_curve_counts_only_top_fidelity_points_and_every_cost():
    s = np.array([0.2, 1.0, 0.5, 1.0])
    y = np.array([[0.0, 0.0], [0.5, 0.5], [0.0, 0.0], [np.nan, np.nan]])
    cc, hv = hv_curve(s, y, np.array([0.1, 1.0, 0.3, 1.0]), [1.0, 1.0])
    np.testing.assert_allclose(cc, [0.1, 1.1, 1.4, 2.4])
    np.testing.assert_allclose(hv, [0.0, 0.25, 0.25, 0.25])


def test_cost_to_reach_is_censored_at_the_budget():
    cc, hv = np.array([1.0, 2.0, 3.0]), np.array([0.1, 0.5, 0.9])
    assert cost_to_reach(cc, hv, 0.5, budget=10) == 2.0
    assert cost_to_reach(cc, hv, 0.9, budget=2.5) == math.inf
    assert cost_to_reach(cc, hv, 0.95, budget=10) == math.inf
    assert cost_at_best(cc, np.array([0.1, 0.9, 0.9])) == (0.9, 2.0)


def test_censored_summary():
    s = censored_summary([1.0, 2.0, 3.0, math.inf])
    assert s["median"] == 2.5 and s["q25"] == 1.0 and s["q75"] == 3.0 and s["reached"] == 0.75
    s = censored_summary([1.0, math.inf, math.inf])
    assert s["median"] is None and s["reached"] == pytest.approx(1 / 3)
