"""`vitforge approx`: accuracy of the integer nonlinear units, as JSON and a plot."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .approx import APPROX_FUNCTIONS, approx_report
from .config import DEFAULT_NUMERICS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "approx",
        help="error of the integer GELU/exp/softmax/LayerNorm/sigmoid against float and I-BERT/PLAN",
        description="Max and mean absolute error of each integer nonlinear unit against the float "
        "function, beside I-BERT's approximation (PLAN for sigmoid) at the same bit widths.",
    )
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--plot", type=Path, metavar="PNG", help="also plot each unit against the float function")
    p.add_argument("--seed", type=int, default=0, help="seed of the row-wise test inputs (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = approx_report(DEFAULT_NUMERICS, seed=args.seed)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        header = ("function", "bits in/out", "max err", "I-BERT max", "mean err", "I-BERT mean")
        print("{:<10} {:>11} {:>10} {:>10} {:>10} {:>11}".format(*header))
        for name in APPROX_FUNCTIONS:
            r = report[name]
            print(
                f"{name:<10} {r['input_bits']:>5}/{r['output_bits']:<5} {r['max_abs_err']:>10.5f} "
                f"{r['ref_max_abs_err']:>10.5f} {r['mean_abs_err']:>10.5f} {r['ref_mean_abs_err']:>11.5f}"
            )
    if args.plot:
        from .plots import plot_approx

        plot_approx(DEFAULT_NUMERICS, args.plot)
        if not args.json:
            print(f"plot written to {args.plot}")
    return 0
