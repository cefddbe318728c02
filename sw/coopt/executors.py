"""Where evaluations run: in this process (one worker) or as Ray tasks (``workers > 1`` or a cluster).

An evaluation does not raise: an exception or a non-finite objective comes back as a failed
:class:`Outcome` carrying the error, and the run goes on. The exception is objectives of the wrong
shape (:class:`ObjectiveShapeError`): a bug in the problem, refused at once.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .problem import ObjectiveShapeError, Problem

#: Ray 2.60 turns on token authentication by default (it writes ~/.ray/auth_token); a local
#: cluster started here opts out through this variable unless the user set it.
RAY_AUTH_ENV = "RAY_AUTH_MODE"


@dataclass(frozen=True)
class Outcome:
    """A finished evaluation: ``y (m,)`` float64, or ``None`` with ``error`` set; wall seconds."""

    pid: int
    y: np.ndarray | None
    error: str | None
    seconds: float


def evaluate_point(problem: Problem, pid: int, x: np.ndarray, s: float) -> Outcome:
    """Evaluate one design ``x (d,)`` at fidelity ``s``; failures are returned, not raised."""
    t0 = time.perf_counter()
    try:
        y = problem.evaluate(x[None, :], np.array([s]))[0]
        if not np.all(np.isfinite(y)):
            return Outcome(pid, None, f"non-finite objectives {y.tolist()}", time.perf_counter() - t0)
        return Outcome(pid, y, None, time.perf_counter() - t0)
    except ObjectiveShapeError:
        raise
    except Exception as err:
        tb = traceback.format_exception_only(type(err), err)[-1].strip()
        return Outcome(pid, None, tb, time.perf_counter() - t0)


class InProcess:
    """One worker, no Ray: :meth:`submit` evaluates at once; :meth:`wait` hands the result back."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.done: list[Outcome] = []

    def submit(self, pid: int, x: np.ndarray, s: float) -> None:
        self.done.append(evaluate_point(self.problem, pid, x, s))

    def wait(self) -> Outcome:
        return self.done.pop(0)

    def close(self) -> None:
        pass


class RayPool:
    """Evaluations as Ray tasks (one CPU each).

    Args:
        problem_factory: builds the problem inside a worker (a built-in problem is rebuilt there
            by name; a user's problem is shipped with cloudpickle).
        workers: CPUs of the local Ray started when ``address`` is None.
        address: a running cluster's address (``ray.init(address=...)``); nothing is started then.
    """

    def __init__(self, problem_factory: Callable[[], Problem], workers: int, address: str | None = None) -> None:
        import ray

        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            if address is None:
                os.environ.setdefault(RAY_AUTH_ENV, "disabled")
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                         configure_logging=False)
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            self.started = True
        self.factory = ray.put(problem_factory)
        self.task = ray.remote(num_cpus=1)(_ray_evaluate)
        self.inflight: dict = {}

    def submit(self, pid: int, x: np.ndarray, s: float) -> None:
        ref = self.task.remote(self.factory, pid, x, s)
        self.inflight[ref] = pid

    def wait(self) -> Outcome:
        ready, _ = self.ray.wait(list(self.inflight), num_returns=1)
        pid = self.inflight.pop(ready[0])
        try:
            return self.ray.get(ready[0])
        except ObjectiveShapeError:  # Ray's task error is an instance of its cause
            raise
        except Exception as err:
            return Outcome(pid, None, f"ray task failed: {type(err).__name__}: {err}", float("nan"))

    def close(self) -> None:
        for ref in self.inflight:
            self.ray.cancel(ref, force=True)
        if self.started:
            self.ray.shutdown()


#: The problem a Ray worker built last, by the factory's ``cache_key``: a worker keeps it (and the
#: problem's own caches) between tasks.
_WORKER_PROBLEMS: dict = {}


def _ray_evaluate(factory: Callable[[], Problem], pid: int, x: np.ndarray, s: float) -> Outcome:
    import torch

    torch.set_num_threads(1)
    key = getattr(factory, "cache_key", id(factory))
    if key not in _WORKER_PROBLEMS:
        _WORKER_PROBLEMS.clear()
        _WORKER_PROBLEMS[key] = factory()
    return evaluate_point(_WORKER_PROBLEMS[key], pid, x, s)
