"""`vitforge latency-calibrate`: the cycle model (hw/cycles.py) measured against the RTL, per layer."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("latency-calibrate", help="measure the cycle model against the RTL, per layer",
                       description="Runs sim/latency_calib.py's shapes on the RTL and prints, per shape and layer, "
                       "the modeled and measured cycles and the relative error.")
    p.add_argument("--sim", choices=("amaranth", "verilator", "icarus"), default="amaranth",
                   help="simulator (default amaranth; verilator for the demo shapes)")
    p.add_argument("--cases", choices=("small", "demo", "all"), default="small",
                   help="small: seconds each in Amaranth; demo: the demo model's full-size shapes")
    p.add_argument("--json", action="store_true", help="one JSON object per shape")
    p.set_defaults(func=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:
    from .latency_calib import DEMO_CASES, SMALL_CASES, calibrate

    cases = {"small": SMALL_CASES, "demo": DEMO_CASES, "all": SMALL_CASES + DEMO_CASES}[args.cases]
    worst = 0.0
    for case in cases:
        res = calibrate(case, args.sim)
        worst = max([worst, *(abs(r["error"]) for r in res["per_layer"].values())])
        if args.json:
            print(json.dumps({k: res[k] for k in ("case", "total", "per_layer", "select_tokens")}
                             | {"mismatched_instructions": len(res["mismatches"])}, sort_keys=True), flush=True)
            continue
        print(f"{case.name}: model {res['total'][0]} / rtl {res['total'][1]} cycles, "
              f"{len(res['mismatches'])} of {res['instructions']} instructions differ", flush=True)
        for layer, r in res["per_layer"].items():
            print(f"  {layer:<14} model {r['model']:>10} rtl {r['rtl']:>10} error {100 * r['error']:+.2f}%")
    if not args.json:
        print(f"largest per-layer error: {100 * worst:.2f}%")
    return 0
