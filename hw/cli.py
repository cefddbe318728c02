"""`vitforge rtl`: generate Verilog for a preset, and estimate its FPGA resources with Yosys.

``rtl generate`` writes :func:`blocks` (the stand-alone units, the whole accelerator ``encoder_top``,
the board-level ``axi_top`` and the ReRAM ``crossbar_tile``); ``rtl report`` synthesizes
``encoder_top`` alone (:func:`vitforge.hw.synth.report`), or with ``--crossbar`` the crossbar tile
alone (:func:`vitforge.hw.synth.crossbar_report`). ``--crossbar JSON`` takes
:class:`~vitforge.quant.crossbar.CrossbarConfig` fields, e.g. ``'{"rows": 64, "cols": 16,
"cell_bits": 1, "dac_bits": 2, "adc_bits": [3, 3, 3, 3, 3, 3, 1]}'``; omitted fields keep their
defaults (a 32 x 32 tile, 2-bit cells, 1-bit DACs, lossless ADCs); ``rtl pnr`` places and routes
``encoder_top`` on an ECP5 (:func:`vitforge.hw.pnr.place_and_route`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from vitforge.quant.crossbar import CrossbarConfig

from .config import PRESETS, HwConfig, get_preset
from .synth import DEFAULT_DEVICE, DEVICES


def crossbar_config(text: str) -> CrossbarConfig:
    """``--crossbar JSON``: a :class:`CrossbarConfig` from a JSON object of its fields."""
    try:
        fields = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"--crossbar must be a JSON object of CrossbarConfig fields: {err}") from None
    if not isinstance(fields, dict):
        raise argparse.ArgumentTypeError(f"--crossbar must be a JSON object, not {text!r}")
    try:
        return CrossbarConfig.from_dict(fields)
    except (ValueError, TypeError) as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def blocks(config: HwConfig, crossbar: CrossbarConfig | None = None) -> dict[str, str]:
    """Verilog text of every generated block of ``config``, by top-module name.

    The units of :mod:`vitforge.hw.units` that ``config`` builds, stand-alone, in registration order
    (``gemm_engine`` includes its ``requant``; ``gemm_sequencer`` includes the engine), then the whole
    accelerator ``encoder_top`` (controller, every unit and the scratchpads), ``axi_top``
    (:class:`~vitforge.hw.axi.AxiTop`: encoder_top behind the AXI4-Lite register file and the AXI4
    memory port: the board's top) and last ``crossbar_tile``: a ReRAM crossbar tile
    (:class:`~vitforge.hw.crossbar.CrossbarTile`) of ``crossbar`` (default ``CrossbarConfig()``).
    """
    from .verilog import generate

    return {name: generate(make(), name) for name, make in designs(config, crossbar).items()}


def designs(config: HwConfig, crossbar: CrossbarConfig | None = None) -> dict:
    """What :func:`blocks` generates: block name -> zero-argument factory of the Amaranth component.
    The Verilator lint (tests/hw/test_lint.py) checks the same list, with the controller."""
    from . import units
    from .axi import AxiTop
    from .crossbar import CrossbarTile
    from .synth import CROSSBAR_TOP
    from .top import EncoderTop

    out = {u.name: (lambda u=u: u.build(config)) for u in units.enabled(config)}
    out["encoder_top"] = lambda: EncoderTop(config=config)
    out["axi_top"] = lambda: AxiTop(config=config)
    out[CROSSBAR_TOP] = lambda: CrossbarTile(config=crossbar or CrossbarConfig())
    return out


def lint_designs(config: HwConfig) -> dict:
    """What the Verilator lint checks (tests/hw/test_lint.py): :func:`designs` and the controller."""
    from .controller import Controller

    return {**designs(config), "controller": lambda: Controller(config=config)}


def crossbar_block(crossbar: CrossbarConfig | None = None) -> str:
    """Verilog of the ReRAM crossbar tile of ``crossbar`` (default ``CrossbarConfig()``), top ``crossbar_tile``."""
    from .crossbar import CrossbarTile
    from .synth import CROSSBAR_TOP
    from .verilog import generate

    return generate(CrossbarTile(config=crossbar or CrossbarConfig()), CROSSBAR_TOP)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rtl", help="generate the accelerator's Verilog, estimate its resources (Yosys) or place "
                       "and route it (ECP5)")
    rtl = p.add_subparsers(dest="rtl_command", metavar="ACTION", required=True)
    g = rtl.add_parser("generate", help="write the Verilog of a hardware preset")
    g.add_argument("--preset", default="demo", help=f"hardware preset ({', '.join(sorted(PRESETS))})")
    g.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the .v files")
    g.add_argument("--crossbar", type=crossbar_config, default=None, metavar="JSON",
                   help="CrossbarConfig fields of crossbar_tile.v (default: a 32x32 tile, c=2, d=1, lossless ADCs)")
    g.set_defaults(func=run_generate)
    r = rtl.add_parser("report", help="Yosys synth_xilinx -family xcup resources of a preset's accelerator "
                       "(one hierarchical synthesis of encoder_top) and whether it fits a device")
    r.add_argument("--preset", default="demo", help=f"hardware preset ({', '.join(sorted(PRESETS))})")
    r.add_argument("--device", default=DEFAULT_DEVICE, choices=sorted(DEVICES),
                   help=f"device whose capacity the totals are compared with (default {DEFAULT_DEVICE})")
    r.add_argument("--selector-overhead", action="store_true",
                   help="also synthesize the preset without the token selector and report the difference")
    r.add_argument("--crossbar", type=crossbar_config, nargs="?", const=CrossbarConfig(), default=None,
                   metavar="JSON", help="synthesize the ReRAM crossbar tile of these CrossbarConfig fields "
                   "instead of encoder_top (no JSON: the default tile)")
    r.add_argument("--json", action="store_true", help="print the figures as JSON")
    r.set_defaults(func=run_report)
    n = rtl.add_parser("pnr", help="place and route a preset's accelerator core on an ECP5-85F (ULX3S) with the open "
                       "YoWASP tools: post-route Fmax, critical path, utilization, bitstream")
    n.add_argument("--preset", default="demo", help=f"hardware preset ({', '.join(sorted(PRESETS))})")
    n.add_argument("--family", default="ecp5", choices=("ecp5",), help="FPGA family (ecp5: the ULX3S-85F)")
    n.add_argument("--out", type=Path, default=None, metavar="DIR", help="build folder (default build/pnr/PRESET)")
    n.add_argument("--json", action="store_true", help="print the figures as JSON")
    n.set_defaults(func=run_pnr)


def run_generate(args: argparse.Namespace) -> int:
    config = get_preset(args.preset)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in blocks(config, args.crossbar).items():
        (args.out / f"{name}.v").write_text(text)
        print(args.out / f"{name}.v")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from .synth import RESOURCES, describe_fit, report

    if args.crossbar is not None:
        return run_crossbar_report(args)
    result = report(get_preset(args.preset), device=args.device, selector_overhead=args.selector_overhead)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    header = "".join(f"{r:>10}" for r in RESOURCES)
    print(f"{'block':<24}{header}")
    for name, r in result["per_block"].items():
        print(f"{name:<24}" + "".join(f"{r[k]:>10,}" for k in RESOURCES))
    print(f"{'total':<24}" + "".join(f"{result[k]:>10,}" for k in RESOURCES) + f"  ({result['seconds']} s)")
    fit = result["device"]
    print(f"{fit['name'] + ' %':<24}" + "".join(f"{fit['utilization_pct'][k]:>10}" for k in RESOURCES))
    print(describe_fit(fit))
    if "selector_overhead" in result:
        over = result["selector_overhead"]
        print(f"{'selector overhead':<24}" + "".join(f"{over[k]['delta']:>+10,}" for k in RESOURCES))
        print(f"{'selector overhead %':<24}" + "".join(f"{over[k]['pct']:>+10}" for k in RESOURCES))
    return 0


def run_crossbar_report(args: argparse.Namespace) -> int:
    """``rtl report --crossbar``: the tile's resources, its timing and the device fit."""
    from .synth import RESOURCES, crossbar_report, describe_fit

    result = crossbar_report(args.crossbar, device=args.device)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    cfg = args.crossbar
    print(f"crossbar_tile {cfg.rows}x{cfg.cols}, c={cfg.cell_bits}, d={cfg.dac_bits}, "
          f"ADC bits {list(cfg.slice_adc_bits)} ({cfg.adc_mode}), {cfg.cols_per_adc} column(s) per ADC")
    print("".join(f"{r:>10}" for r in RESOURCES))
    print("".join(f"{result[r]:>10,}" for r in RESOURCES) + f"  ({result['seconds']} s)")
    timing = result["timing"]
    print(f"latency {timing['latency']} cycles, one vector per {timing['interval']} cycles, "
          f"weight load {timing['load_cycles']} cycles")
    print(describe_fit(result["device"]))
    return 0


def run_pnr(args: argparse.Namespace) -> int:
    from .pnr import default_build_dir, place_and_route
    from .top import EncoderTop

    config = get_preset(args.preset)
    out = args.out or default_build_dir(args.preset)
    result = place_and_route(EncoderTop(config=config), config, out, name=f"vitforge_{args.preset}_core").to_json()
    result.update(preset=args.preset, family=args.family, device="LFE5U-85F-6BG381 (ULX3S-85F)")
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    crit = result["critical_path"]
    print(f"{args.preset} core on the {result['device']}: Fmax {result['fmax_mhz']} MHz after routing (target "
          f"{result['target_mhz']:g} MHz: {'met' if result['meets_target'] else 'missed'})")
    if crit:
        print(f"critical path: {crit['from']} -> {crit['to']} ({crit['delay_ns']} ns)")
    for name, u in result["utilization"].items():
        print(f"  {name:<8}{u['used']:>8,} of {u['available']:,}")
    print(f"bitstream: {result['bitstream']} ({result['seconds']} s)")
    return 0
