#!/usr/bin/env python
"""How long the demo preset takes to train all stages (dense, selectors, int8 QAT) and export.

Runs ``vitforge train --preset demo`` in-process and prints the wall time and the report's
figures. Usage: ``python scripts/bench_train.py [--out DIR] [--seed N] [--threads N]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from vitforge.sw.train import TrainConfig
from vitforge.sw.workflow import Target, train_to_dir

TARGET_S = 600


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None, help="output directory (default: a temporary one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1; results depend on it)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out or Path(tempfile.mkdtemp(prefix="vitforge-bench-"))
    tc = TrainConfig(seed=args.seed, threads=args.threads, progress=False)
    start = time.perf_counter()
    report = train_to_dir(out, "demo", args.seed, Target(), None, "demo", tc)
    wall = time.perf_counter() - start
    keys = ("float_dense_acc", "float_pruned_acc", "qat_acc", "int8_pruned_acc", "gmacs_dense", "gmacs_pruned",
            "gmacs_reduction", "selector_blocks", "keep_rates", "thresholds", "golden_equals_qat")
    print(json.dumps({k: report[k] for k in keys}, sort_keys=True, indent=1))
    print(f"demo preset, all stages + export + golden eval: {wall:.1f} s wall on {args.threads} thread(s) "
          f"(target {TARGET_S} s); output in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
