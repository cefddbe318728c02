"""Accuracy against bit-slice sparsity: a sweep of L1 and bit-slice L1, its frontier plot and JSON.

    python scripts/bench_reram_sparsity.py [--out out/reram_sparsity] [--l1-alphas 2 128]
        [--bitslice-alphas 0.5 2] [--prune-codes 2] [--thresholds 4 8 32] [--epochs 4 1.5 6]
        [--plot PNG] [--json]

ResNet-20 (``--channels``, default 4) on the default data's first ``--max-train`` training images
(3,000), 32x32 tiles of 2-bit cells (the slices the penalty and the ratios see), per-tensor int8
weights. One run directory per (method, alpha, training pruning threshold) under ``--out``: a run
that is finished is skipped, an interrupted one resumes (``vitforge.sw.reram.sparsity.run_sweep``).
The same settings as ``vitforge reram train --method M --epochs 4 1.5 6 --max-train 3000
--channels 4`` (a run trained that way in ``OUT/<run>`` is used as it is). Prints, against the
reference L1 run, the best zero-slice ratio each method reaches within ``--max-drop`` points, per
slice and overall, and the bound on 2x. One thread. The default is 4 runs (about 10 minutes here);
the README's frontier is the command there (16 runs).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from vitforge.quant.crossbar import CrossbarConfig
from vitforge.sw.data import load_data
from vitforge.sw.reram.models import ModelConfig
from vitforge.sw.reram.plots import plot_sparsity_frontier
from vitforge.sw.reram.sparsity import OVERALL, SWEEP_METHODS, SweepConfig, run_sweep, slice_key, summarize
from vitforge.sw.reram.train import TrainConfig


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _where(point: dict) -> str:
    """A point's run, with ``T<threshold>`` when it was pruned harder after training."""
    return point["run"] + ("" if point["threshold"] is None else f" T{point['threshold']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="out/reram_sparsity", help="run directories and frontier.json")
    p.add_argument("--data", default=None, help="as `vitforge reram train --data` (default: the embedded digits)")
    p.add_argument("--channels", type=int, default=4)
    p.add_argument("--max-train", type=int, default=3000)
    p.add_argument("--epochs", type=float, nargs=3, default=(4.0, 1.5, 6.0), metavar=("FLOAT", "QAT", "FINETUNE"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cell-bits", type=int, default=2)
    p.add_argument("--l1-alphas", type=float, nargs="+", default=[2.0, 128.0])
    p.add_argument("--bitslice-alphas", type=float, nargs="+", default=[0.5, 2.0])
    p.add_argument("--reference-l1-alpha", type=float, default=2.0)
    p.add_argument("--reference-bitslice-alpha", type=float, default=0.5)
    p.add_argument("--prune-codes", type=int, nargs="+", default=[2],
                   help="training pruning thresholds; the first for every alpha, the others at the reference alphas")
    p.add_argument("--thresholds", type=int, nargs="*", default=[4, 8, 32],
                   help="post-training thresholds (no fine-tuning) applied to every trained model")
    p.add_argument("--max-drop", type=float, default=1.0)
    p.add_argument("--more-drops", type=float, nargs="*", default=[5.0, 10.0],
                   help="also print the best ratios within these many points of the reference")
    p.add_argument("--plot", default=None, help="the frontier plot (default OUT/frontier.png)")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")
    args = p.parse_args()
    torch.set_num_threads(1)
    data = load_data(args.data, seed=args.seed)
    model = ModelConfig(channels=args.channels, in_chans=data.channels, num_classes=data.num_classes,
                        image_size=data.image_size)
    base = TrainConfig(model=model, crossbar=CrossbarConfig(cell_bits=args.cell_bits), seed=args.seed,
                       float_epochs=args.epochs[0], qat_epochs=args.epochs[1], finetune_epochs=args.epochs[2],
                       max_train=args.max_train or None, progress=False)
    cfg = SweepConfig(base=base, l1_alphas=tuple(args.l1_alphas), bitslice_alphas=tuple(args.bitslice_alphas),
                      prune_codes=tuple(args.prune_codes), thresholds=tuple(args.thresholds),
                      reference_l1_alpha=args.reference_l1_alpha,
                      reference_bitslice_alpha=args.reference_bitslice_alpha, max_drop=args.max_drop)
    result = run_sweep(cfg, data, args.out)
    n_slices = base.crossbar.n_slices
    plot = Path(args.plot) if args.plot else Path(args.out) / "frontier.png"
    result["plot"] = str(plot_sparsity_frontier(result["points"], result["summary"], plot, n_slices))
    result["more_drops"] = {str(drop): summarize(result["points"], cfg.reference, n_slices, drop)["definitions"]
                            for drop in args.more_drops}
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return
    s = result["summary"]
    ref = s["reference"]
    print(f"reference {ref['run']}: int8 top-1 {ref['top1']:.2f}%, zero slices overall {_pct(ref[OVERALL])}, "
          f"per slice {' / '.join(_pct(ref[slice_key(k)]) for k in range(n_slices))}; floor {s['floor']:.2f}%")
    print(f"{'definition':<10}{'2x L1':>9}" + "".join(f"{m + ' best':>22}{'x L1':>7}" for m in SWEEP_METHODS))
    for d, e in s["definitions"].items():
        row = f"{d:<10}{_pct(e['target']):>9}"
        for m in SWEEP_METHODS:
            b = e["best"][m]
            pt = b["point"]
            if pt is None:
                row += f"{'-':>22}{'-':>7}"
                continue
            ratio = "-" if b["ratio"] is None else f"{b['ratio']:.2f}x"
            row += f"{_pct(pt[d]) + ' (' + _where(pt) + ')':>22}{ratio:>7}"
        print(row)
    b = s["bound"]
    at = b["best_top1_at_needed"]
    needed = ("impossible (no ratio exceeds 100%)" if b["pruned_needed"] is None else
              f"needs {_pct(b['pruned_needed'])} of the weights at code 0")
    print(f"2x overall = {_pct(b['target'])}: {needed}"
          + ("" if at is None else f"; the best model with that many: {at['top1']:.2f}% ({_where(at)}, "
             f"{_pct(at['pruned'])} zero)")
          + f"; the most pruned point: {_pct(b['most_pruned']['pruned'])} at {b['most_pruned']['top1']:.2f}%")
    for drop, definitions in result["more_drops"].items():
        cells = []
        for d, e in definitions.items():
            cells.append(f"{d} " + " / ".join("-" if e["best"][m]["ratio"] is None else
                                              f"{e['best'][m]['ratio']:.2f}x ({_where(e['best'][m]['point'])})"
                                              for m in SWEEP_METHODS))
        print(f"within {float(drop):g} points (x L1, {' / '.join(SWEEP_METHODS)}): " + "; ".join(cells))
    print("points the other method dominates (better or equal on ratio and top-1): " + "; ".join(
        f"{d} " + " / ".join(f"{m} {e['dominated'][m][0]}/{e['dominated'][m][1]}" for m in SWEEP_METHODS)
        for d, e in s["definitions"].items()))
    print("2x reached within the floor on: " + (", ".join(f"{m} {d}" for m, d in s["reached"]) or "none"))
    print(f"plot {result['plot']}; points {args.out}/frontier.json")


if __name__ == "__main__":
    main()
