#!/usr/bin/env python
"""How long the demo preset takes to train all stages (dense, selectors, int8 QAT) and export, and
what the kernel profiles (vitforge/kernels.py) cost.

* ``python scripts/bench_train.py [--out DIR] [--seed N] [--threads N]``: ``vitforge train --preset
  demo`` in-process (the kernel profile of ``$VITFORGE_KERNELS``, default portable): wall time per
  stage, steps per stage and the report's figures.
* ``python scripts/bench_train.py --kernels-only [--steps N] [--rounds R]``: dense-stage steps of
  the demo model under each profile, in alternating subprocesses (one thread each); times as
  ratios to ``native`` within the one run, since absolute times move with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from vitforge.kernels import KERNEL_PROFILE, KERNEL_PROFILES, KERNELS_ENV, kernel_status, user_environ
from vitforge.sw.data import load_data
from vitforge.sw.train import TrainConfig, time_dense_steps
from vitforge.sw.vit import get_config
from vitforge.sw.workflow import Target, train_to_dir

TARGET_S = 600


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
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1; results depend on it)")
    p.add_argument("--kernels-only", action="store_true", help="time the kernel profiles only")
    p.add_argument("--steps", type=int, default=40, help="dense steps per profile and round (--kernels-only)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of all profiles (--kernels-only)")
    p.add_argument("--time-child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.time_child is not None:
        time_child(args.time_child)
    elif args.kernels_only:
        kernels_only(args.steps, args.rounds)
    else:
        pipeline(args.out, args.seed, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
