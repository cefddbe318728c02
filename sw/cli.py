"""`vitforge train`, `vitforge export`, `vitforge eval`: the model side of the flow."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .train import TrainConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a ViT with HeatViT token selectors (dense -> pruned -> int8 QAT) and export it",
        description="Runs all training stages for a latency target, exports the int8 artifact, evaluates it "
        "with the integer golden model and writes DIR/report.json, checkpoints and plots.",
    )
    p.add_argument("--preset", default="demo", help="model preset: demo, deit-tiny, deit-small, deit-base")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    p.add_argument("--seed", type=int, default=0, help="seed of data placement, init and training (default 0)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--latency-target-ms", type=float,
                   help="latency target in ms under the RTL-calibrated cycle model of --hw-preset at its clock "
                   "(see `vitforge latency`)")
    g.add_argument("--mac-reduction", type=float,
                   help="target fraction of the dense model's MACs to remove, under the MAC proxy (default 0.5)")
    p.add_argument("--data", default=None,
                   help="data: digits (default, embedded), npz:PATH, folder:PATH, cifar10:DIR")
    p.add_argument("--hw-preset", default="demo", help="hardware preset the artifact targets (default demo)")
    p.add_argument("--epochs", type=int, default=None, help="dense-stage epochs (default: the preset's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
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


def run_train(args: argparse.Namespace) -> int:
    import torch

    from .workflow import Target, train_to_dir

    tc = TrainConfig(seed=args.seed, progress=not args.no_progress)
    if args.epochs is not None:
        tc = TrainConfig(**{**tc.to_dict(), "dense_epochs": args.epochs})
    torch.set_num_threads(tc.threads)
    start = time.perf_counter()
    report = train_to_dir(args.out, args.preset, args.seed, Target(args.latency_target_ms, args.mac_reduction),
                          args.data, args.hw_preset, tc)
    print(json.dumps({k: report[k] for k in ("float_dense_acc", "int8_pruned_acc", "gmacs_dense", "gmacs_pruned",
                                             "keep_rates", "selector_blocks")}, sort_keys=True))
    print(f"report written to {args.out / 'report.json'} ({time.perf_counter() - start:.0f} s)")
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
