"""Problem API: validation with named values, rounding of integer and categorical variables, costs."""

from __future__ import annotations

import numpy as np
import pytest

from vitforge.sw.coopt.problem import Problem
from vitforge.sw.coopt.registry import get_problem

from .conftest import make_toy, toy_cost, toy_objectives


@pytest.mark.parametrize("bounds, match", [
    ([(1.0, 1.0)], r"bounds\[0\] must be finite with lo < hi, not \(1.0, 1.0\)"),
    ([(0.0, 1.0), (2.0, -1.0)], r"bounds\[1\] .* not \(2.0, -1.0\)"),
    ([], "at least one"),
])
def test_bad_bounds_are_named(bounds, match):
    with pytest.raises(ValueError, match=match):
        Problem(bounds=bounds, objectives=toy_objectives, cost=toy_cost, ref_point=[1, 1])


def test_objectives_of_the_wrong_shape_are_refused():
    p = Problem(bounds=[(0, 1)] * 2, objectives=lambda x, s: x[:, :1], cost=toy_cost, ref_point=[1, 1])
    with pytest.raises(ValueError, match=r"must return shape \(3, 2\) .* not \(3, 1\)"):
        p.evaluate(np.zeros((3, 2)), np.ones(3))


def test_integer_and_categorical_variables_are_rounded_before_f_sees_them():
    seen = []

    def f(x, s):
        seen.append(x.copy())
        return np.stack([x[:, 0], -x[:, 1]], axis=1)

    p = Problem(bounds=[(0, 10), (1, 8), (0, 1)], objectives=f, cost=toy_cost, ref_point=[20, 0],
                integers=[0], categories={1: (1, 2, 4, 8)})
    p.evaluate(np.array([[3.4, 2.9, 0.25], [9.6, 6.5, 0.5]]), np.ones(2))
    np.testing.assert_array_equal(seen[0], [[3.0, 2.0, 0.25], [10.0, 8.0, 0.5]])
    u = p.to_unit(np.array([[3.0, 4.0, 0.5]]))
    np.testing.assert_array_equal(p.from_unit(u), [[3.0, 4.0, 0.5]])


def test_bad_variable_declarations():
    with pytest.raises(ValueError, match="categories\\[0\\] must be non-empty values within bounds"):
        Problem(bounds=[(0, 1)], objectives=toy_objectives, cost=toy_cost, ref_point=[1, 1], categories={0: (2,)})
    with pytest.raises(ValueError, match=r"integer variable index must be in 0\.\.0, not 3"):
        Problem(bounds=[(0, 1)], objectives=toy_objectives, cost=toy_cost, ref_point=[1, 1], integers=[3])


def test_relative_cost_is_in_top_fidelity_units_and_checked():
    p = make_toy()
    np.testing.assert_allclose(p.relative_cost(np.array([0.0, 1.0])), [0.05 / 1.05, 1.0])
    bad = Problem(bounds=[(0, 1)], objectives=toy_objectives, cost=lambda s: s - 0.5, ref_point=[1, 1])
    with pytest.raises(ValueError, match="positive and finite"):
        bad.relative_cost(np.array([0.0]))


def test_a_reference_point_better_than_every_point_is_refused_with_a_hint():
    p = make_toy()
    p.check_ref_point(np.array([[0.5, 2.0], [2.0, 0.5]]))  # each objective beaten somewhere: fine
    bad = Problem(bounds=[(0, 1)] * 2, objectives=toy_objectives, cost=toy_cost, ref_point=[-1, -1])
    with pytest.raises(ValueError, match=r"ref_point \[-1.0, -1.0\] .* e.g. \[2.15, 2.15\]"):
        bad.check_ref_point(np.array([[0.5, 2.0], [2.0, 0.5]]))


def test_unknown_problem_is_named():
    with pytest.raises(ValueError, match="unknown problem 'nope': choose one of momf-branin-currin, momf-park"):
        get_problem("nope")


@pytest.mark.parametrize("name, d, max_hv", [("momf-branin-currin", 2, 0.5235514), ("momf-park", 4, 0.0855193)])
def test_botorch_test_functions(name, d, max_hv):
    p = get_problem(name)
    assert p.dim == d and p.num_objectives == 2
    assert p.max_hv == pytest.approx(max_hv, abs=1e-7)
    np.testing.assert_allclose(p.relative_cost(np.array([0.0, 0.5])), np.exp(-4.8 * np.array([1.0, 0.5])))
    y = p.evaluate(np.full((1, d), 0.5), np.ones(1))
    assert y.shape == (1, 2) and np.all(np.isfinite(y))
