#!/usr/bin/env python
"""How long the demo preset takes to train all stages (dense, selectors, int8 QAT) and export, and
what the kernel profiles (vitforge/kernels.py) cost.

* ``python scripts/bench_train.py [--out DIR] [--seed N] [--threads N]``: ``vitforge train --preset
  demo`` in-process (the kernel profile of ``$VITFORGE_KERNELS``, default portable): wall time per
  stage, steps per stage and the report's figures.
* ``python scripts/bench_train.py --step-costs REPORT [--steps N]``: the cost of the training run
  that wrote ``REPORT`` (a ``report.json`` on the default data) against the code before issue #14
  (commit a6faf32: cosine over 3 / 0.5 / 0.15 passes of all training images, no validation), as
  optimizer steps x per-step cost plus validation checks x images x per-image cost (and the
  teacher's one pass over the images, :class:`~vitforge.sw.train.Teacher`), each cost the median
  of ``--steps`` interleaved rounds in one process (demo model, batch 64): the run's costs at its
  thread count (``threads`` in the report) with the fused attention of the float blocks
  (sw/vit.py), the old code's at its one thread with the three-module attention. Work both codes
  share (calibration, test evaluation, export, the golden model) is left out. The old code also
  ran MKL's and oneDNN's native kernels (this process runs one profile for both: see
  ``--kernels-only`` for what the profile costs).
* ``python scripts/bench_train.py --kernels-only [--steps N] [--rounds R]``: dense-stage steps of
  the demo model under each profile, in alternating subprocesses (one thread each); times as
  ratios to ``native`` within the one run, since absolute times move with the machine's load.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch

from vitforge.kernels import KERNEL_PROFILE, KERNEL_PROFILES, KERNELS_ENV, kernel_status, user_environ
from vitforge.sw.data import load_data, validation_split
from vitforge.sw.latency import MacLatency, choose_schedule
from vitforge.sw.train import (
    QAT_VAL_IMAGES,
    Teacher,
    TrainConfig,
    dense_objective,
    pruned_from,
    qat_objective,
    seed_everything,
    selector_objective,
    time_dense_steps,
    train_dense,
    train_qat,
)
from vitforge.sw.vit import Attention, get_config
from vitforge.sw.workflow import Target, train_to_dir

TARGET_S = 600
#: The code before issue #14 (commit a6faf32): passes of all training images per stage.
OLD_PASSES = {"dense": 3.0, "prune": 0.5, "qat": 0.15}


def time_child(steps: int) -> None:
    cfg = get_config("demo")
    data = load_data(None, size=cfg.image_size)
    torch.set_num_threads(1)
    seconds = time_dense_steps(cfg, data.x_train[:64], data.y_train[:64], steps)
    print(json.dumps({"profile": KERNEL_PROFILE, "seconds": seconds, "kernels": kernel_status()}))


def kernels_only(steps: int, rounds: int) -> None:
    totals = {p: 0.0 for p in KERNEL_PROFILES}
    for r in range(rounds):
        for profile in KERNEL_PROFILES:
            env = {**user_environ(), KERNELS_ENV: profile}
            out = subprocess.run([sys.executable, __file__, "--time-child", str(steps)], env=env, check=True,
                                 capture_output=True, text=True).stdout
            res = json.loads(out.strip().splitlines()[-1])
            totals[profile] += res["seconds"]
            print(f"round {r + 1}: {profile:8s} {res['seconds']:7.2f} s for {steps} steps  {res['kernels']}")
    for profile, t in totals.items():
        print(f"{profile:8s} {t:8.2f} s total, {t / totals['native']:.2f}x native")


def _interleaved(calls: dict[str, tuple[Callable[[], None], int]], rounds: int) -> dict[str, float]:
    """Median seconds of each call over ``rounds`` rounds that run every call in turn (so that a
    change of the machine's load moves them all alike); ``calls[name] = (fn, per_round)``."""
    for fn, _ in calls.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(rounds):
        for name, (fn, per_round) in calls.items():
            if r < per_round:
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _as_code(fn: Callable[[], None], threads: int, old: bool) -> Callable[[], None]:
    """``fn`` on ``threads`` threads; ``old``: with the three-module attention (the code before #14)."""
    def call() -> None:
        torch.set_num_threads(threads)
        if old:
            with mock.patch.object(Attention, "fused", lambda self, alive: False):
                fn()
        else:
            fn()
    return call


def unit_costs(steps: int, threads: int) -> dict[str, float]:
    """Seconds per optimizer step and per validation image of each stage's objective (demo model,
    the default data's first batch; the model's weights do not change the cost).

    ``dense``/``prune``/``qat``: as training runs them now, on ``threads`` threads, the teacher's
    outputs cached (:class:`~vitforge.sw.train.Teacher`); ``dense_old``/``prune_live``/``qat_live``:
    the code before #14, one thread, the three-module attention and a teacher forward in every
    call; ``teacher_image``: the teacher's forward per image (the cache's one pass, ``threads``)."""
    seed_everything(0, 1)
    cfg = get_config("demo")
    data = load_data(None, size=cfg.image_size)
    split = validation_split(data, 0.1)
    tc = TrainConfig(progress=False, calib_images=64, threads=1)
    x, y = split.x_fit[:64], split.y_fit[:64]
    key = torch.arange(len(y))
    dense, _ = train_dense(cfg, split, tc, 1, log=lambda s: None)
    latency = MacLatency()
    schedule = choose_schedule(cfg, Target().resolve(cfg, latency), latency)
    pruned = pruned_from(dense, schedule)
    pruned.set_decision("gumbel")
    pruned.active_selectors = len(schedule.selector_blocks)
    qat, _ = train_qat(pruned, dense, split, tc, 0, log=lambda s: None)
    student = copy.deepcopy(dense)
    cached, live = Teacher(dense, x), Teacher(dense)
    rates = torch.tensor(schedule.keep_rates)
    objectives = {"dense": (student, dense_objective(student), False),
                  "dense_old": (student, dense_objective(student), True),
                  "prune": (pruned, selector_objective(pruned, cached, rates), False),
                  "prune_live": (pruned, selector_objective(pruned, live, rates), True),
                  "qat": (qat, qat_objective(qat, cached), False),
                  "qat_live": (qat, qat_objective(qat, live), True)}
    calls: dict[str, tuple[Callable[[], None], int]] = {
        "teacher_batch": (_as_code(lambda: live.forward(x), threads, False), steps)}
    for name, (model, loss_fn, old) in objectives.items():
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
        n = steps if not name.startswith("qat") else max(3, steps // 4)

        def step(model=model, loss_fn=loss_fn, opt=opt) -> None:
            model.train()
            loss, _ = loss_fn(x, y, key)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def check(model=model, loss_fn=loss_fn) -> None:
            model.train()
            with torch.no_grad():
                loss_fn(x, y, key)

        calls[f"{name}_step"] = (_as_code(step, 1 if old else threads, old), n)
        calls[f"{name}_val_batch"] = (_as_code(check, 1 if old else threads, old), n)
    med = _interleaved(calls, steps)
    costs = {k: v for k, v in med.items() if k.endswith("_step")}
    costs.update({k.replace("_batch", "_image"): v / len(y) for k, v in med.items() if k.endswith("_batch")})
    return costs


def step_costs(report_path: Path, steps: int) -> None:
    report = json.loads(report_path.read_text())
    tc = TrainConfig(**{**report["train"], "progress": False})
    n_all = report["train_images"] + report["val_images"]
    old_steps = {k: max(1, round(p * math.ceil(n_all / tc.batch_size))) for k, p in OLD_PASSES.items()}
    costs = unit_costs(steps, tc.threads)
    print(f"now: {tc.threads} thread(s), fused attention in the float blocks; before #14: 1 thread")
    print("per step / per validation image (s): " + ", ".join(f"{k} {v:.4f}" for k, v in costs.items()))
    old_total, new_total = 0.0, 0.0
    for kind, n_stages in (("dense", 1), ("prune", len(report["selector_blocks"])), ("qat", 1)):
        stages = [st for st in report["stages"] if st["name"].rstrip("0123456789") == kind]
        old_kind = {"dense": "dense_old"}.get(kind, f"{kind}_live")  # before the cache: a teacher forward per step
        old = n_stages * old_steps[kind] * costs[f"{old_kind}_step"]
        n_steps = sum(st["steps"] for st in stages)
        n_checks = sum(len(st["history"]) for st in stages)
        per_check = min(report["val_images"], tc.val_images if kind == "dense" else tc.calib_images,
                        QAT_VAL_IMAGES if kind == "qat" else tc.val_images)
        train_s = n_steps * costs[f"{kind}_step"]
        check_s = n_checks * per_check * costs[f"{kind}_val_image"]
        # The teacher's one pass over the fit images and the checks' validation images (stage 2's
        # first step computes it; stage 3 reuses it).
        teacher_n = report["train_images"] + min(report["val_images"], tc.calib_images) if kind == "prune" else 0
        teacher_s = teacher_n * costs["teacher_image"]
        old_total += old
        new_total += train_s + check_s + teacher_s
        teacher = f" + teacher pass over {teacher_n} images ({teacher_s:.1f} s)" if teacher_n else ""
        print(f"{kind}: before #14 {n_stages} x {old_steps[kind]} steps = {old:.1f} s; now {n_steps} steps "
              f"({train_s:.1f} s) + {n_checks} checks x {per_check} images ({check_s:.1f} s){teacher} = "
              f"{train_s + check_s + teacher_s:.1f} s")
    print(f"training stages: before #14 {old_total:.1f} s, now {new_total:.1f} s, ratio {new_total / old_total:.3f} "
          "(shared work left out)")


def pipeline(out: Path | None, seed: int, threads: int) -> None:
    torch.set_num_threads(threads)
    out = out or Path(tempfile.mkdtemp(prefix="vitforge-bench-"))
    tc = TrainConfig(seed=seed, threads=threads, progress=False)
    start = time.perf_counter()
    report = train_to_dir(out, "demo", seed, Target(), None, "demo", tc)
    wall = time.perf_counter() - start
    keys = ("float_dense_acc", "float_pruned_acc", "qat_acc", "int8_pruned_acc", "gmacs_dense", "gmacs_pruned",
            "gmacs_reduction", "selector_blocks", "keep_rates", "thresholds", "golden_equals_qat", "converged",
            "kernels")
    print(json.dumps({k: report[k] for k in keys}, sort_keys=True, indent=1))
    for st in report["stages"]:
        print(f"{st['name']}: {st['steps']}/{st['budget']} steps, stopped by {st['stopped']}, "
              f"best val acc {st['best_val_acc']:.2f}% at step {st['best_step']}")
    timings = json.loads((out / "timings.json").read_text())["seconds_per_stage"]
    print("seconds per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    print(f"demo preset, all stages + export + golden eval: {wall:.1f} s wall on {threads} thread(s) "
          f"(target {TARGET_S} s, kernels {KERNEL_PROFILE}); output in {out}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None, help="output directory (default: a temporary one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=TrainConfig().threads,
                   help=f"torch threads (default {TrainConfig().threads}; results depend on it)")
    p.add_argument("--kernels-only", action="store_true", help="time the kernel profiles only")
    p.add_argument("--steps", type=int, default=40, help="dense steps per profile and round (--kernels-only); "
                   "rounds of the unit costs (--step-costs; QAT a quarter of them)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of all profiles (--kernels-only)")
    p.add_argument("--step-costs", type=Path, default=None, metavar="REPORT",
                   help="cost of the run that wrote REPORT (report.json) against the code before #14")
    p.add_argument("--time-child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.time_child is not None:
        time_child(args.time_child)
    elif args.step_costs is not None:
        step_costs(args.step_costs, args.steps)
    elif args.kernels_only:
        kernels_only(args.steps, args.rounds)
    else:
        pipeline(args.out, args.seed, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
