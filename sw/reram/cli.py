"""`vitforge reram train|eval|cost`: crossbar-aware training, accuracy on simulated chips, and costs."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from vitforge.quant.crossbar.config import CrossbarConfig

from .device import NoiseConfig, OperatingPoint

MHZ = 1e6


def _bits(text: str) -> int | tuple[int, ...] | None:
    """``8`` -> 8, ``3,3,3,1`` -> (3, 3, 3, 1) (least significant slice first), ``lossless`` -> None."""
    if text == "lossless":
        return None
    parts = [p for p in text.split(",") if p]
    try:
        vals = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"ADC bits must be an integer, a comma list or 'lossless', not {text!r}") from None
    return vals[0] if len(vals) == 1 else vals


def _op_point(text: str) -> OperatingPoint:
    """``MHZ:K``, e.g. ``1000:400``."""
    f, _, t = text.partition(":")
    try:
        return OperatingPoint(float(f) * MHZ, float(t))
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"operating point must be MHZ:KELVIN with both > 0, not {text!r}: {err}") from err


def _add_crossbar(p: argparse.ArgumentParser, cell_bits: int = 2) -> None:
    g = p.add_argument_group("crossbar")
    g.add_argument("--rows", type=int, default=32, help="wordlines per tile (default 32)")
    g.add_argument("--cols", type=int, default=32, help="bitlines (output columns) per tile (default 32)")
    g.add_argument("--cell-bits", type=int, default=cell_bits, help=f"bits per cell, 1..7 (default {cell_bits})")
    g.add_argument("--dac-bits", type=int, default=1, help="bits per DAC step, 1..7 (default 1)")
    g.add_argument("--adc-bits", type=_bits, default=None,
                   help="ADC bits: one for every slice, a list LSB slice first (e.g. 3,3,3,1) or 'lossless' (default)")
    g.add_argument("--adc-mode", default="saturate", help="saturate (default) or scaled")
    g.add_argument("--cols-per-adc", type=int, default=1, help="bitlines sharing one ADC (default 1)")
    g.add_argument("--prog-sigma", type=float, default=0.0, help="programming variation, level steps (default 0)")
    g.add_argument("--read-voltage", type=float, default=0.1, help="read voltage, V (default 0.1)")
    g.add_argument("--frequency-mhz", type=float, default=100.0, help="read frequency, MHz (default 100)")
    g.add_argument("--temperature-k", type=float, default=300.0, help="temperature, K (default 300)")


def _crossbar(args: argparse.Namespace) -> CrossbarConfig:
    return CrossbarConfig(rows=args.rows, cols=args.cols, cell_bits=args.cell_bits, dac_bits=args.dac_bits,
                          adc_bits=args.adc_bits, adc_mode=args.adc_mode, cols_per_adc=args.cols_per_adc,
                          prog_sigma=args.prog_sigma, read_voltage=args.read_voltage)


def _op(args: argparse.Namespace) -> OperatingPoint:
    return OperatingPoint(args.frequency_mhz * MHZ, args.temperature_k)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reram", help="ReRAM crossbars: train for them, evaluate on simulated chips, costs",
                       description="Bit-sliced ReRAM crossbars with per-slice ADCs and device noise.")
    rsub = p.add_subparsers(dest="reram_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    t = rsub.add_parser("train", help="train a model for crossbars (plain, l1, bitslice-l1, resna); resumes")
    t.add_argument("--method", required=True, help="plain, l1, bitslice-l1 or resna")
    t.add_argument("--model", default="resnet20", help="resnet20 (default) or vit (the demo ViT's linear layers)")
    t.add_argument("--channels", type=int, default=8, help="ResNet-20 base channels (default 8)")
    t.add_argument("--out", type=Path, required=True, metavar="DIR")
    t.add_argument("--data", default=None, help="digits (default, embedded), npz:PATH, folder:PATH, cifar10:DIR")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--epochs", type=float, nargs=3, metavar=("FLOAT", "QAT", "FINETUNE"), default=(6.0, 2.0, 1.0),
                   help="stage lengths in epochs (default 6 2 1)")
    t.add_argument("--max-train", type=int, default=4000, help="first N training images (default 4000; 0: all)")
    t.add_argument("--l1-alpha", type=float, default=2.0)
    t.add_argument("--bitslice-alpha", type=float, default=0.5)
    t.add_argument("--prune-codes", type=int, default=2, help="prune |code| below this before fine-tuning")
    t.add_argument("--last-layer-noise", type=float, default=0.5, help="ReSNA: noise factor on the last layer")
    t.add_argument("--per-channel", action="store_true", help="per-channel weight scales (default per tensor)")
    t.add_argument("--adc-budget", action="store_true",
                   help="l1/bitslice-l1: keep every column sum within what --adc-bits converts without clipping "
                        "(projection after pruning and every fine-tuning step)")
    t.add_argument("--snap", type=int, default=0, metavar="CODES",
                   help="l1/bitslice-l1: clear a code's lowest slices when they hold at most CODES (after the "
                        "budget projection, at the same points; default 0: off)")
    t.add_argument("--json", action="store_true")
    t.add_argument("--no-progress", action="store_true")
    _add_crossbar(t)
    t.set_defaults(func=run_train)

    e = rsub.add_parser("eval", help="accuracy on simulated crossbars: noise seeds, clip and zero-slice ratios")
    e.add_argument("--checkpoint", type=Path, action="append", required=True,
                   help="model.safetensors from `reram train` (repeat to compare models)")
    e.add_argument("--data", default=None)
    e.add_argument("--images", type=int, default=None, help="first N test images (default all)")
    e.add_argument("--noise", action="store_true", help="device noise on (read, programming, RTN, ADC)")
    e.add_argument("--adc-sigma", type=float, default=0.0, help="ADC noise, LSBs (default 0)")
    e.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="noise seeds: one chip each")
    e.add_argument("--vote", action="store_true", help="majority vote of three copies of the last layer")
    e.add_argument("--sweep-adc-bits", type=int, nargs="+", default=None, metavar="N",
                   help="also evaluate every slice at N ADC bits, for each N (plot: accuracy against ADC bits)")
    e.add_argument("--sweep-op", type=_op_point, nargs="+", default=None, metavar="MHZ:K",
                   help="also evaluate at these operating points with noise (plot: accuracy against them)")
    e.add_argument("--plots", type=Path, default=None, metavar="DIR", help="write the plots here")
    e.add_argument("--out", type=Path, default=None, help="write the result JSON here too")
    e.add_argument("--json", action="store_true")
    e.add_argument("--no-progress", action="store_true")
    _add_crossbar(e)
    e.set_defaults(func=run_eval)

    c = rsub.add_parser("cost", help="NeuroSim-style area, latency and energy per tile and per network")
    c.add_argument("--model", default="resnet20", help="resnet20 (default), vit or none (tile only)")
    c.add_argument("--channels", type=int, default=8)
    c.add_argument("--image-size", type=int, default=32)
    c.add_argument("--in-chans", type=int, default=1)
    c.add_argument("--plot", type=Path, default=None, metavar="PNG", help="per-component bars")
    c.add_argument("--json", action="store_true")
    _add_crossbar(c)
    c.set_defaults(func=run_cost)


def run_train(args: argparse.Namespace) -> int:
    import torch

    from vitforge.sw.data import load_data

    from .models import ModelConfig
    from .train import TrainConfig, train

    torch.set_num_threads(1)
    data = load_data(args.data, seed=args.seed)
    mc = ModelConfig(kind=args.model, channels=args.channels, in_chans=data.channels, num_classes=data.num_classes,
                     image_size=data.image_size, per_channel=args.per_channel)
    tc = TrainConfig(method=args.method, model=mc, crossbar=_crossbar(args), op=_op(args), seed=args.seed,
                     float_epochs=args.epochs[0], qat_epochs=args.epochs[1], finetune_epochs=args.epochs[2],
                     max_train=args.max_train or None, l1_alpha=args.l1_alpha, bitslice_alpha=args.bitslice_alpha,
                     prune_codes=args.prune_codes, last_layer_noise_scale=args.last_layer_noise,
                     adc_budget=args.adc_budget, snap=args.snap,
                     progress=not args.no_progress)
    start = time.perf_counter()
    model = train(tc, data, args.out)
    from .evaluate import evaluate
    from .layers import zero_slice_ratios

    res = evaluate(model, data.x_test, data.y_test)
    report = {"method": tc.method, "model": mc.kind, "int8_top1": res["top1_mean"],
              "zero_slice_ratio": zero_slice_ratios(model, tc.crossbar),
              "checkpoint": str(args.out / "model.safetensors"),
              "seconds": round(time.perf_counter() - start, 1)}
    (args.out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(json.dumps(report, sort_keys=True) if args.json else
          f"{tc.method}: int8 top-1 {report['int8_top1']:.2f}%, zero slices "
          f"{[round(100 * r, 1) for r in report['zero_slice_ratio']]}%, {report['checkpoint']}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from vitforge.sw.data import load_data

    from .evaluate import evaluate
    from .train import load_model

    torch.set_num_threads(1)
    cfg = _crossbar(args)
    noise = NoiseConfig(op=_op(args), adc_sigma_lsb=args.adc_sigma) if args.noise else None
    progress = not args.no_progress
    results = []
    for ck in args.checkpoint:
        model, tc, _ = load_model(ck)
        data = load_data(args.data, seed=tc.seed)
        x, y = data.x_test[:args.images], data.y_test[:args.images]
        seeds = tuple(args.seeds)
        entry = {"checkpoint": str(ck), "method": tc.method, "int8": evaluate(model, x, y)["top1_mean"]}
        _stage(f"{ck}: crossbar")
        entry["crossbar"] = evaluate(model, x, y, cfg, noise, seeds, 3 if args.vote else 1, progress)
        if args.sweep_adc_bits:
            entry["adc_sweep"] = {}
            for n in args.sweep_adc_bits:
                _stage(f"{ck}: {n}-bit ADCs")
                r = evaluate(model, x, y, replace(cfg, adc_bits=n), noise, seeds, 3 if args.vote else 1, progress)
                entry["adc_sweep"][str(n)] = r
        if args.sweep_op:
            entry["op_sweep"] = {}
            for op in args.sweep_op:
                _stage(f"{ck}: {op.label()}")
                r = evaluate(model, x, y, cfg, NoiseConfig(op=op, adc_sigma_lsb=args.adc_sigma), seeds,
                             3 if args.vote else 1, progress)
                entry["op_sweep"][op.label()] = r
        results.append(entry)
    out = {"crossbar": _cfg_dict(cfg), "noise": None if noise is None else {"op": noise.op.label(),
           "adc_sigma_lsb": noise.adc_sigma_lsb}, "images": len(y), "seeds": list(args.seeds),
           "vote": args.vote, "results": results}
    if args.plots:
        out["plots"] = [str(p) for p in _eval_plots(results, args.plots)]
    text = json.dumps(out, indent=2, sort_keys=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(args.out)
    if args.json:
        print(text)
    else:
        for r in results:
            c = r["crossbar"]
            print(f"{r['checkpoint']} ({r['method']}): int8 {r['int8']:.2f}%, crossbar {c['top1_mean']:.2f} "
                  f"+- {c['top1_std']:.2f}%, clip rate per slice {[round(100 * v, 2) for v in c['clip_rate']]}%, "
                  f"zero slices {[round(100 * v, 1) for v in c['zero_slice_ratio']]}%")
    return 0


def _stage(msg: str) -> None:
    print(f"[reram eval] {msg}", file=sys.stderr, flush=True)


def _cfg_dict(cfg: CrossbarConfig) -> dict:
    from dataclasses import asdict

    d = asdict(cfg)
    d["slice_adc_bits"] = list(cfg.slice_adc_bits)
    d["lossless_bits"] = cfg.lossless_bits
    return d


def _label(r: dict) -> str:
    run = Path(r["checkpoint"]).parent.name
    return r["method"] if run == r["method"] else f"{r['method']} ({run})"


def _eval_plots(results: list[dict], out: Path) -> list[Path]:
    from .plots import plot_lines, plot_zero_ratio

    paths = [plot_zero_ratio({_label(r): r["crossbar"]["zero_slice_ratio"] for r in results}, out / "zero_ratio.png")]
    if all("adc_sweep" in r for r in results):
        series = {}
        for r in results:
            ns = list(r["adc_sweep"])
            series[_label(r)] = ([int(n) for n in ns], [r["adc_sweep"][n]["top1_mean"] for n in ns],
                                 [r["adc_sweep"][n]["top1_std"] for n in ns])
        paths.append(plot_lines(series, out / "accuracy_vs_adc_bits.png", "ADC bits (every slice)"))
    if all("op_sweep" in r for r in results):
        series = {}
        for r in results:
            ops = list(r["op_sweep"])
            series[_label(r)] = (ops, [r["op_sweep"][o]["top1_mean"] for o in ops],
                                 [r["op_sweep"][o]["top1_std"] for o in ops])
        paths.append(plot_lines(series, out / "accuracy_vs_operating_point.png",
                                "operating point (frequency / temperature)"))
    return paths


def run_cost(args: argparse.Namespace) -> int:
    from .cost import layer_geometry, network_cost, tile_cost

    cfg = _crossbar(args)
    op = _op(args)
    out: dict = {"crossbar": _cfg_dict(cfg), "op": op.label(), "tile": tile_cost(cfg, op).to_dict()}
    if args.model != "none":
        from .models import ModelConfig
        from .train import init_model

        mc = ModelConfig(kind=args.model, channels=args.channels, in_chans=args.in_chans, image_size=args.image_size)
        geo = layer_geometry(init_model(mc, 0), (args.in_chans, args.image_size, args.image_size))
        out["network"] = network_cost(geo, cfg, op)
    if args.plot:
        from .plots import plot_cost

        per = out["network"]["total"] if "network" in out else {k: out["tile"][k] for k in
                                                                 ("area_um2", "latency_ns", "energy_pj")}
        out["plot"] = str(plot_cost(per, args.plot, f"{args.model}, {cfg.rows}x{cfg.cols}, c={cfg.cell_bits}, "
                                    f"ADC {list(cfg.slice_adc_bits)}"))
    if args.json:
        print(json.dumps(out, indent=2, sort_keys=True))
    else:
        print(f"{'component':<10}{'area um^2':>14}{'latency ns':>14}{'energy pJ':>14}   (per tile, one vector)")
        t = out["tile"]
        for comp in t["area_um2"]:
            print(f"{comp:<10}{t['area_um2'][comp]:>14.1f}{t['latency_ns'][comp]:>14.1f}{t['energy_pj'][comp]:>14.2f}")
        if "network" in out:
            n = out["network"]
            print(f"network: {n['tiles']} tiles; per image:")
            for comp in n["total"]["area_um2"]:
                print(f"{comp:<10}{n['total']['area_um2'][comp]:>14.1f}{n['total']['latency_ns'][comp]:>14.1f}"
                      f"{n['total']['energy_pj'][comp]:>14.2f}")
    return 0
