"""`vitforge train`, `vitforge export`, `vitforge eval`: the model side of the flow."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from vitforge.kernels import KERNEL_PROFILES, KERNELS_ENV, set_kernel_profile

from .train import TrainConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a ViT with HeatViT token selectors (dense -> pruned -> int8 QAT) and export it",
        description="Runs all training stages for a latency target, exports the int8 artifact, evaluates it "
        "with the integer golden model and writes DIR/report.json, checkpoints and plots.",
    )
    p.add_argument("--preset", default="demo", help="model preset: demo, deit-tiny, deit-small, deit-base")
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="output directory (required unless --resume)")
    p.add_argument("--seed", type=int, default=0, help="seed of data placement, init and training (default 0)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--latency-target-ms", type=float,
                   help="latency target in ms under the RTL-calibrated cycle model of --hw-preset at its clock "
                   "(see `vitforge latency`)")
    g.add_argument("--latency-reduction", type=float,
                   help="target fraction of the dense model's latency to remove, under the same cycle model "
                   "(the default: 0.5)")
    g.add_argument("--mac-reduction", type=float,
                   help="target fraction of the dense model's MACs to remove, under the MAC proxy instead")
    p.add_argument("--data", default=None,
                   help="data: digits (default, embedded), npz:PATH, folder:PATH, cifar10:DIR")
    p.add_argument("--hw-preset", default="demo", help="hardware preset the artifact targets (default demo)")
    d = TrainConfig()
    p.add_argument("--resume", type=Path, metavar="DIR", default=None,
                   help="continue the killed run in DIR from its checkpoints (its other flags are reused)")
    g = p.add_argument_group("stages (budgets in optimizer steps; default: scaled to the data set's size)")
    g.add_argument("--dense-steps", type=int, default=None, help="most steps of the dense stage")
    g.add_argument("--epochs", type=float, default=None,
                   help="dense-stage budget in passes over the training images (sets --dense-steps)")
    g.add_argument("--prune-steps", type=int, default=None, help="most steps after inserting each selector")
    g.add_argument("--qat-steps", type=int, default=None, help="most steps of int8 QAT (0: calibration only)")
    g.add_argument("--patience", type=int, default=d.patience,
                   help=f"validation checks without improvement that end a stage's constant phase ({d.patience})")
    g.add_argument("--eval-every", type=int, default=None, help="steps between validation checks "
                   "(default: about 20 per budget)")
    g.add_argument("--lr", type=float, default=d.lr, help=f"dense learning rate ({d.lr:g})")
    g.add_argument("--prune-lr", type=float, default=d.prune_lr, help=f"selector-stage learning rate ({d.prune_lr:g})")
    g.add_argument("--qat-lr", type=float, default=d.qat_lr, help=f"QAT learning rate ({d.qat_lr:g})")
    g.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help=f"fraction of the training images held out for validation ({d.val_fraction:g})")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help=f"batch size ({d.batch_size})")
    p.add_argument("--threads", type=int, default=d.threads,
                   help=f"torch threads ({d.threads}); the artifact depends on the count, not on the machine; more "
                   "threads pay only on otherwise idle cores")
    p.add_argument("--kernels", choices=KERNEL_PROFILES, default=None,
                   help=f"CPU kernel profile (default: ${KERNELS_ENV} or portable): portable = the same artifact "
                   "on every AVX2 x86 CPU, strict = on every x86-64 CPU (about 2x slower), native = CPU-dependent")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or per-check lines (default: "
                   "bars on a terminal, one line per validation check otherwise)")
    p.set_defaults(func=run_train)

    p = sub.add_parser("export", help="export a QAT checkpoint to an int8 artifact directory")
    p.add_argument("--checkpoint", type=Path, required=True, help="a qat.safetensors from `vitforge train`")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="artifact directory to write")
    p.add_argument("--hw-preset", default="demo", help="hardware preset (default demo)")
    p.add_argument("--data", default=None, help="data set recorded in the manifest for `vitforge eval`")
    p.add_argument("--seed", type=int, default=0, help="data seed recorded in the manifest")
    p.set_defaults(func=run_export)

    p = sub.add_parser("eval", help="evaluate an int8 artifact (integer golden model)")
    p.add_argument("--artifact", type=Path, required=True, metavar="DIR")
    p.add_argument("--backend", choices=("golden",), default="golden", help="golden: the bit-exact integer model")
    p.add_argument("--data", default=None, help="data spec (default: the one recorded in the artifact)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N test images")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=run_eval)


def train_config(args: argparse.Namespace, n_train: int | None = None) -> TrainConfig:
    """The :class:`TrainConfig` of ``vitforge train``'s flags (``--epochs`` needs ``n_train``, the
    training images the budget is counted in)."""
    dense_steps = args.dense_steps
    if args.epochs is not None:
        if dense_steps is not None:
            raise ValueError("give --dense-steps or --epochs, not both")
        dense_steps = max(1, round(args.epochs * n_train / args.batch_size))
    return TrainConfig(
        seed=args.seed, batch_size=args.batch_size, val_fraction=args.val_fraction, dense_steps=dense_steps,
        prune_steps=args.prune_steps, qat_steps=args.qat_steps, patience=args.patience, eval_every=args.eval_every,
        lr=args.lr, prune_lr=args.prune_lr, qat_lr=args.qat_lr, threads=args.threads,
        progress=False if args.no_progress else None)


def run_train(args: argparse.Namespace) -> int:
    import torch

    from .workflow import Target, resume_dir, train_to_dir

    if args.kernels is not None:
        set_kernel_profile(args.kernels)
    start = time.perf_counter()
    if args.resume is not None:
        out = args.resume
        torch.set_num_threads(TrainConfig().threads)
        report = resume_dir(out)
    else:
        if args.out is None:
            raise ValueError("--out DIR is required (or --resume DIR)")
        out = args.out
        n_train = None
        if args.epochs is not None:
            from .data import load_data, validation_split
            from .vit import get_config

            data = load_data(args.data, seed=args.seed, size=get_config(args.preset).image_size)
            n_train = len(validation_split(data, args.val_fraction).y_fit)
        tc = train_config(args, n_train)
        torch.set_num_threads(tc.threads)
        target = Target(args.latency_target_ms, args.mac_reduction, args.latency_reduction)
        report = train_to_dir(out, args.preset, args.seed, target, args.data, args.hw_preset, tc)
    keys = ("float_dense_acc", "int8_pruned_acc", "gmacs_dense", "gmacs_pruned", "keep_rates", "selector_blocks",
            "converged")
    print(json.dumps({k: report[k] for k in keys if k in report}, sort_keys=True))
    for w in report.get("warnings", []):
        print(f"WARNING: {w}", file=sys.stderr)
    print(f"report written to {out / 'report.json'} ({time.perf_counter() - start:.0f} s)")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from .workflow import export_model, load_checkpoint

    model = load_checkpoint(args.checkpoint)
    if not model.patch_embed.quantized:
        raise ValueError(f"{args.checkpoint}: not a QAT checkpoint (export needs the stage-3 model)")
    path = export_model(model, args.out, args.hw_preset, {"spec": args.data or "digits", "seed": args.seed})
    print(f"artifact written to {path}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from .data import load_data
    from .export import load_artifact
    from .workflow import evaluate_artifact

    data = None
    if args.data is not None:
        im, _ = load_artifact(args.artifact)
        data = load_data(args.data, size=im.config.image_size)
    res = evaluate_artifact(args.artifact, data, args.limit)
    out = {"top1": res["top1"], "gmacs": res["gmacs"], "images": res["images"],
           "tokens_per_block": res["tokens_per_block"]}
    if args.json:
        print(json.dumps(out, sort_keys=True))
    else:
        print(f"top1 {out['top1']:.2f}% on {out['images']} images, {out['gmacs']:.6f} GMACs per image")
    return 0
