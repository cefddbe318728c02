"""The problem API: a design space, objectives at a fidelity, a cost per fidelity, a reference point.

Every objective is minimized. The fidelity ``s`` is continuous in ``[0, 1]``; ``s = 1`` is the top
fidelity, the only one the comparison's hypervolume counts. Optimizers work in the unit cube
(:meth:`Problem.from_unit` maps a point there to the design space, rounding integer and categorical
variables); the objectives only ever see rounded designs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

#: The top fidelity: the only one whose evaluations count towards hypervolume.
TOP_FIDELITY = 1.0

class ObjectiveShapeError(ValueError):
    """A problem's objectives or cost returned the wrong shape: a bug to fix, not a failed evaluation."""


Objectives = Callable[[np.ndarray, np.ndarray], np.ndarray]
Cost = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Problem:
    """A multi-objective, multi-fidelity design problem.

    Args:
        bounds: ``d`` pairs ``(lo, hi)`` with ``lo < hi``.
        objectives: ``f(x, fidelity)``: ``x (n, d)`` float64 designs (integer and categorical
            coordinates already rounded), ``fidelity (n,)`` float64 in ``[0, 1]``; returns
            ``(n, m)`` float objective values, every one minimized.
        cost: ``c(fidelity)``: ``(n,)`` float64 fidelities to ``(n,)`` positive costs. The
            comparison counts cost in top-fidelity units, ``c(s) / c(1)``.
        ref_point: ``m`` values, each worse than the value any interesting design reaches: the
            hypervolume counts the region between the Pareto front and this point.
        integers: indices of integer variables (rounded to the nearest integer in bounds).
        categories: index -> allowed values of an ordered categorical variable (rounded to the
            nearest allowed value; the values must lie within that variable's bounds).
        name: shown in reports and plots.
        objective_names: ``m`` labels (default ``f0``, ``f1``, ...).
        max_hv: the known maximum hypervolume against ``ref_point``, if known.
        min_fidelity: the lowest fidelity a multi-fidelity optimizer may choose.
    """

    bounds: Sequence[tuple[float, float]]
    objectives: Objectives
    cost: Cost
    ref_point: Sequence[float]
    integers: Sequence[int] = ()
    categories: Mapping[int, Sequence[float]] = field(default_factory=dict)
    name: str = "custom"
    objective_names: Sequence[str] | None = None
    max_hv: float | None = None
    min_fidelity: float = 0.0

    def __post_init__(self) -> None:
        bounds = tuple((float(lo), float(hi)) for lo, hi in self.bounds)
        if not bounds:
            raise ValueError("bounds must hold at least one (lo, hi) pair, not an empty list")
        for i, (lo, hi) in enumerate(bounds):
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"bounds[{i}] must be finite with lo < hi, not ({lo}, {hi})")
        object.__setattr__(self, "bounds", bounds)
        ref = tuple(float(v) for v in self.ref_point)
        if not ref or not all(math.isfinite(v) for v in ref):
            raise ValueError(f"ref_point must be a non-empty list of finite values, not {list(self.ref_point)}")
        object.__setattr__(self, "ref_point", ref)
        d = len(bounds)
        ints = tuple(sorted({int(i) for i in self.integers}))
        for i in ints:
            if not 0 <= i < d:
                raise ValueError(f"integer variable index must be in 0..{d - 1}, not {i}")
        object.__setattr__(self, "integers", ints)
        cats: dict[int, tuple[float, ...]] = {}
        for i, values in dict(self.categories).items():
            if not 0 <= int(i) < d:
                raise ValueError(f"categorical variable index must be in 0..{d - 1}, not {i}")
            vals = tuple(sorted(float(v) for v in values))
            lo, hi = bounds[int(i)]
            if not vals or vals[0] < lo or vals[-1] > hi:
                raise ValueError(f"categories[{i}] must be non-empty values within bounds ({lo}, {hi}), not {vals}")
            if int(i) in ints:
                raise ValueError(f"variable {i} is declared both integer and categorical")
            cats[int(i)] = vals
        object.__setattr__(self, "categories", cats)
        if self.objective_names is None:
            object.__setattr__(self, "objective_names", tuple(f"f{j}" for j in range(len(ref))))
        elif len(self.objective_names) != len(ref):
            raise ValueError(f"objective_names must have {len(ref)} entries (one per objective), "
                             f"not {len(self.objective_names)}")
        if not 0.0 <= self.min_fidelity < TOP_FIDELITY:
            raise ValueError(f"min_fidelity must be in [0, 1), not {self.min_fidelity}")

    @property
    def dim(self) -> int:
        return len(self.bounds)

    @property
    def num_objectives(self) -> int:
        return len(self.ref_point)

    def _lo_hi(self) -> tuple[np.ndarray, np.ndarray]:
        b = np.asarray(self.bounds, dtype=np.float64)
        return b[:, 0], b[:, 1]

    def round(self, x: np.ndarray) -> np.ndarray:
        """Round integer and categorical coordinates and clip to bounds. ``x: (n, d)`` float64."""
        x = np.array(x, dtype=np.float64, copy=True)
        lo, hi = self._lo_hi()
        x = np.clip(x, lo, hi)
        for i in self.integers:
            x[:, i] = np.clip(np.round(x[:, i]), math.ceil(lo[i]), math.floor(hi[i]))
        for i, vals in self.categories.items():
            v = np.asarray(vals)
            x[:, i] = v[np.abs(x[:, i, None] - v[None, :]).argmin(axis=1)]
        return x

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        """Unit-cube points ``u (n, d)`` to rounded designs ``(n, d)`` float64."""
        lo, hi = self._lo_hi()
        return self.round(lo + np.asarray(u, dtype=np.float64) * (hi - lo))

    def to_unit(self, x: np.ndarray) -> np.ndarray:
        """Designs ``x (n, d)`` to the unit cube ``(n, d)`` float64."""
        lo, hi = self._lo_hi()
        return (np.asarray(x, dtype=np.float64) - lo) / (hi - lo)

    def evaluate(self, x: np.ndarray, fidelity: np.ndarray) -> np.ndarray:
        """Objectives of rounded designs: ``x (n, d)``, ``fidelity (n,)`` -> ``(n, m)`` float64.

        Raises:
            ObjectiveShapeError: if ``f`` returns another shape than ``(n, m)``.
        """
        x = self.round(np.atleast_2d(np.asarray(x, dtype=np.float64)))
        s = np.asarray(fidelity, dtype=np.float64).reshape(-1)
        if x.shape != (len(s), self.dim):
            raise ValueError(f"x must be (n, {self.dim}) with one fidelity per row; got x {x.shape}, "
                             f"fidelity {s.shape}")
        y = np.asarray(self.objectives(x, s), dtype=np.float64)
        want = (len(s), self.num_objectives)
        if y.shape != want:
            raise ObjectiveShapeError(f"objectives of problem {self.name!r} must return shape {want} "
                             f"(n points x m objectives, m = len(ref_point)), not {y.shape}")
        return y

    def relative_cost(self, fidelity: np.ndarray) -> np.ndarray:
        """Cost in top-fidelity units, ``c(s) / c(1)``: ``(n,)`` -> ``(n,)`` float64.

        Raises:
            ValueError: if a cost is not positive and finite, or the shape is not ``(n,)``.
        """
        s = np.asarray(fidelity, dtype=np.float64).reshape(-1)
        c = np.asarray(self.cost(np.concatenate([s, [TOP_FIDELITY]])), dtype=np.float64)
        if c.shape != (len(s) + 1,):
            raise ObjectiveShapeError(f"cost of problem {self.name!r} must return shape ({len(s) + 1},), not {c.shape}")
        if not np.all(np.isfinite(c) & (c > 0)):
            raise ValueError(f"cost of problem {self.name!r} must be positive and finite, got {c.tolist()}")
        return c[:-1] / c[-1]

    def check_ref_point(self, y: np.ndarray) -> None:
        """Refuse a reference point that is better than every evaluated point in every objective.

        Args:
            y: ``(n, m)`` objective values evaluated so far (the initial design).

        A design counts towards the hypervolume only if it is better than the reference point in
        every objective. If no evaluated design is better than the reference in any objective, the
        reference point is on the wrong side of the whole sample (a sign or unit mistake); the
        check stays this weak so that a small initial design never refuses a sound point.

        Raises:
            ValueError: naming the reference point and how to pick one.
        """
        y = np.asarray(y, dtype=np.float64)
        y = y[np.all(np.isfinite(y), axis=1)]
        ref = np.asarray(self.ref_point)
        if not len(y):
            return
        beaten = np.any(y < ref, axis=0)
        if not np.any(beaten):
            worst = y.max(axis=0)
            span = np.maximum(y.max(axis=0) - y.min(axis=0), 1e-12)
            hint = (worst + 0.1 * span).round(6).tolist()
            names = [self.objective_names[j] for j in np.flatnonzero(~beaten)]
            raise ValueError(f"ref_point {list(self.ref_point)} of problem {self.name!r}: none of the {len(y)} "
                             f"evaluated points is better than it in any objective ({', '.join(names)}), so no "
                             f"design is likely to dominate it; pick a point slightly worse than the worst value of "
                             f"each objective you care about, e.g. {hint} (worst seen + 10% of the range)")
