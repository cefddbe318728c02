"""`vitforge rtl`: generate Verilog for a preset, and estimate its FPGA resources with Yosys.

``rtl generate`` writes :func:`blocks` (the stand-alone units, the whole accelerator ``encoder_top``
and the board-level ``axi_top``); ``rtl report`` synthesizes ``encoder_top`` alone
(:func:`vitforge.hw.synth.report`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .config import PRESETS, HwConfig, get_preset
from .synth import DEFAULT_DEVICE, DEVICES


def blocks(config: HwConfig) -> dict[str, str]:
    """Verilog text of every generated block of ``config``, by top-module name.

    The units of :mod:`vitforge.hw.units` that ``config`` builds, stand-alone, in registration order
    (``gemm_engine`` includes its ``requant``; ``gemm_sequencer`` includes the engine), then the whole
    accelerator ``encoder_top`` (controller, every unit and the scratchpads) and ``axi_top``
    (:class:`~vitforge.hw.axi.AxiTop`: encoder_top behind the AXI4-Lite register file and the AXI4
    memory port: the board's top).
    """
    from .verilog import generate

    return {name: generate(make(), name) for name, make in designs(config).items()}


def designs(config: HwConfig) -> dict:
    """What :func:`blocks` generates: block name -> zero-argument factory of the Amaranth component.
    The Verilator lint (tests/hw/test_lint.py) checks the same list, with the controller."""
    from . import units
    from .axi import AxiTop
    from .top import EncoderTop

    out = {u.name: (lambda u=u: u.build(config)) for u in units.enabled(config)}
    out["encoder_top"] = lambda: EncoderTop(config=config)
    out["axi_top"] = lambda: AxiTop(config=config)
    return out


def lint_designs(config: HwConfig) -> dict:
    """What the Verilator lint checks (tests/hw/test_lint.py): :func:`designs` and the controller."""
    from .controller import Controller

    return {**designs(config), "controller": lambda: Controller(config=config)}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rtl", help="generate the accelerator's Verilog or estimate its resources")
    rtl = p.add_subparsers(dest="rtl_command", metavar="ACTION", required=True)
    g = rtl.add_parser("generate", help="write the Verilog of a hardware preset")
    g.add_argument("--preset", default="demo", help=f"hardware preset ({', '.join(sorted(PRESETS))})")
    g.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the .v files")
    g.set_defaults(func=run_generate)
    r = rtl.add_parser("report", help="Yosys synth_xilinx -family xcup resources of a preset's accelerator "
                       "(one hierarchical synthesis of encoder_top) and whether it fits a device")
    r.add_argument("--preset", default="demo", help=f"hardware preset ({', '.join(sorted(PRESETS))})")
    r.add_argument("--device", default=DEFAULT_DEVICE, choices=sorted(DEVICES),
                   help=f"device whose capacity the totals are compared with (default {DEFAULT_DEVICE})")
    r.add_argument("--selector-overhead", action="store_true",
                   help="also synthesize the preset without the token selector and report the difference")
    r.add_argument("--json", action="store_true", help="print the figures as JSON")
    r.set_defaults(func=run_report)


def run_generate(args: argparse.Namespace) -> int:
    config = get_preset(args.preset)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in blocks(config).items():
        (args.out / f"{name}.v").write_text(text)
        print(args.out / f"{name}.v")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from .synth import RESOURCES, describe_fit, report

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
