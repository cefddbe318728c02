"""`vitforge coopt run|compare|resume`: co-optimization from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .methods import METHODS
from .registry import PROBLEMS


def _log(args: argparse.Namespace):
    if args.json or sys.stderr.isatty():
        return None  # the progress bar (terminal) or nothing but the JSON

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    return log


def _pairs(items: list[str] | None, kind: type, flag: str) -> dict:
    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{flag} takes METHOD=VALUE, not {item!r}")
        out[name] = kind(value)
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("coopt", help="co-optimization: CF-MESMO and its baselines over design spaces",
                       description="Multi-objective, multi-fidelity optimization of a design space (every "
                       "objective minimized, cost in top-fidelity evaluations).")
    csub = p.add_subparsers(dest="coopt_command", metavar="COMMAND", required=True)

    r = csub.add_parser("run", help="one optimization run, saved (resumable) in DIR")
    r.add_argument("--problem", required=True, help=f"built-in problem: {', '.join(PROBLEMS)}")
    r.add_argument("--method", required=True, help=f"one of {', '.join(METHODS)}")
    r.add_argument("--budget", type=float, required=True, help="cost budget in top-fidelity evaluations")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--workers", type=int, default=1,
                   help="evaluations in flight: 1 runs in-process, N > 1 starts a local Ray with N CPUs")
    r.add_argument("--ray-address", default=None, help="join a running Ray cluster instead (ADDR)")
    r.add_argument("--max-evals", type=int, default=None, help="stop after N evaluations even below the budget")
    r.add_argument("--n-init", type=int, default=None, help="initial-design size (default 2 d + 2)")
    r.add_argument("--out", type=Path, required=True, metavar="DIR")
    r.add_argument("--json", action="store_true", help="print the run's figures as JSON")
    r.set_defaults(func=run_run)

    c = csub.add_parser("compare", help="paired comparison of methods over seeds, with plots")
    c.add_argument("--problem", required=True, help=f"built-in problem: {', '.join(PROBLEMS)}")
    c.add_argument("--methods", nargs="+", required=True, help=f"of {', '.join(METHODS)}")
    c.add_argument("--seeds", type=int, required=True, help="seeds 0..K-1, paired across methods")
    c.add_argument("--budget", type=float, required=True, help="budget per run (top-fidelity evaluations)")
    c.add_argument("--method-budget", nargs="*", metavar="METHOD=B", help="per-method budgets overriding --budget")
    c.add_argument("--max-evals", nargs="*", metavar="METHOD=N", help="per-method caps on evaluations")
    c.add_argument("--workers", type=int, default=1)
    c.add_argument("--n-init", type=int, default=None, help="initial-design size (default 2 d + 2)")
    c.add_argument("--recommend", type=int, default=0,
                   help="evaluate the model's predicted front (K designs) per model-based run")
    c.add_argument("--out", type=Path, required=True, metavar="DIR")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=run_compare)

    s = csub.add_parser("resume", help="continue a killed run without repeating finished evaluations")
    s.add_argument("dir", type=Path, metavar="DIR")
    s.add_argument("--workers", type=int, default=None, help="change the number of workers")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=run_resume)


def _report(result, args: argparse.Namespace) -> int:
    import numpy as np

    from .metrics import hv_curve
    from .plots import plot_hv_vs_cost

    _, s, y, c = result.arrays()
    cc, hv = hv_curve(s, y, c, result.problem.ref_point)
    overhead = [f + a for f, a in result.overhead]
    fig = f"{result.out / 'hv_vs_cost.png'}" if result.out is not None else None
    if result.out is not None:
        plot_hv_vs_cost({result.config.method: [(cc, hv)]}, result.problem.max_hv or float(hv.max(initial=0.0)),
                        result.out / "hv_vs_cost.png", f"{result.problem.name}: {result.config.method}")
    report = {"problem": result.problem.name, "method": result.config.method, "seed": result.config.seed,
              "evaluations": len(result.evaluations), "failed": sum(not e.ok for e in result.evaluations),
              "spent": result.spent, "budget": result.config.budget,
              "top_fidelity_evaluations": int(np.sum(s >= 1.0)), "hypervolume": float(hv[-1]) if len(hv) else 0.0,
              "max_hv": result.problem.max_hv,
              "overhead_s_median": float(np.median(overhead)) if overhead else None,
              "overhead_s_max": float(np.max(overhead)) if overhead else None,
              "overhead_cpu_s_median": float(np.median(result.overhead_cpu)) if overhead else None, "plot": fig}
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        for k, v in report.items():
            print(f"{k}: {v}")
    return 0


def run_run(args: argparse.Namespace) -> int:
    import torch

    from .loop import optimize

    torch.set_num_threads(1)
    result = optimize(args.problem, method=args.method, budget=args.budget, seed=args.seed, workers=args.workers,
                      out=args.out, ray_address=args.ray_address, log=_log(args), max_evals=args.max_evals,
                      n_init=args.n_init)
    return _report(result, args)


def run_resume(args: argparse.Namespace) -> int:
    import torch

    from .loop import resume

    torch.set_num_threads(1)
    return _report(resume(args.dir, workers=args.workers, log=_log(args)), args)


def run_compare(args: argparse.Namespace) -> int:
    import torch

    from .compare import CompareConfig, compare

    torch.set_num_threads(1)
    cfg = CompareConfig(problem=args.problem, methods=tuple(args.methods), seeds=args.seeds, budget=args.budget,
                        budgets=_pairs(args.method_budget, float, "--method-budget"),
                        max_evals=_pairs(args.max_evals, int, "--max-evals"), workers=args.workers,
                        recommend=args.recommend, n_init=args.n_init)
    log = None if args.json else (lambda line: print(line, file=sys.stderr, flush=True))
    summary = compare(cfg, args.out, log=log)
    if args.json:
        print(json.dumps(summary["methods"], sort_keys=True))
    else:
        for m, e in summary["methods"].items():
            ratio = e.get("cost_ratio_to_nsga2_best", {})
            print(f"{m}: final HV median {e['final_hv']['median']:.4f}; cost to 90%: "
                  f"{e['cost_to_90pct']['median']} (reached {e['cost_to_90pct']['reached']:.0%}); "
                  f"cost ratio to NSGA-II's best: {ratio.get('median')} (reached {ratio.get('reached', 0):.0%})")
        print(f"summary and plots in {args.out}")
    return 0
