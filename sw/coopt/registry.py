"""Built-in problems by name.

A :class:`ProblemSpec` names a problem and its options; it is what a run's state records and what
a Ray worker rebuilds the problem from.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .problem import Problem


def _heatvit(**options) -> Problem:
    from .heatvit import heatvit_problem

    return heatvit_problem(**options)


def _reram(**options) -> Problem:
    from .reram import reram_problem

    return reram_problem(**options)


def _branin_currin(**options) -> Problem:
    from .testfunctions import branin_currin

    return branin_currin(**options)


def _park(**options) -> Problem:
    from .testfunctions import park

    return park(**options)


#: name -> factory(**options) -> Problem.
PROBLEMS: dict[str, Callable[..., Problem]] = {
    "momf-branin-currin": _branin_currin,
    "momf-park": _park,
    "heatvit": _heatvit,
    "reram": _reram,
}


@dataclass(frozen=True)
class ProblemSpec:
    """A built-in problem's name and its options (JSON values)."""

    name: str
    options: Mapping = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in PROBLEMS:
            raise ValueError(f"unknown problem {self.name!r}: choose one of {', '.join(PROBLEMS)}")

    @property
    def cache_key(self) -> str:
        return json.dumps({"name": self.name, "options": dict(self.options)}, sort_keys=True)

    def __call__(self) -> Problem:
        return PROBLEMS[self.name](**dict(self.options))


def get_problem(name: str, **options) -> Problem:
    """The built-in problem ``name`` (one of :data:`PROBLEMS`)."""
    return ProblemSpec(name, options)()
