"""Co-optimization of models and hardware: CF-MESMO and its baselines over design spaces.

``from vitforge.sw.coopt import Problem, optimize``: :class:`Problem` declares a design space,
objectives at a fidelity, a cost and a reference point; :func:`optimize` runs a method on it.
The optimizers (BoTorch, pymoo, Ray) load on first use, so importing this package stays light.
"""

from __future__ import annotations

from .problem import TOP_FIDELITY, Problem

__all__ = ["TOP_FIDELITY", "OptimizationResult", "Problem", "get_problem", "optimize", "resume"]

_LAZY = {"optimize": "loop", "resume": "loop", "OptimizationResult": "loop", "get_problem": "registry"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
