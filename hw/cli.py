"""`vitforge rtl`: generate Verilog for a preset, and estimate its FPGA resources with Yosys.

``rtl generate`` writes :func:`blocks` (the stand-alone units, the whole accelerator ``encoder_top``
and the board-level ``axi_top``); ``rtl report`` synthesizes ``encoder_top`` alone
(:func:`vitforge.hw.synth.report`); ``rtl pnr`` places and routes it on an ECP5
(:func:`vitforge.hw.pnr.place_and_route`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .config import PRESETS, HwConfig, get_preset
from .synth import DEFAULT_DEVICE, DEVICES


def blocks(config: HwConfig) -> dict[str, str]:
    """Verilog text of every generated block of ``config``, by top-module name.

    Stand-alone blocks first (``gemm_engine`` includes its ``requant``; ``gemm_sequencer``
    includes the engine), then the whole accelerator ``encoder_top`` (controller, every unit and
    the scratchpads) and ``axi_top`` (:class:`~vitforge.hw.axi.AxiTop`: encoder_top behind the
    AXI4-Lite register file and the AXI4 memory port: the board's top); a unit that ``config``
    disables is left out.
    """
    from .axi import AxiTop
    from .controller import Controller  # noqa: F401 - the top's controller (documented above)
    from .gemm import GemmEngine, GemmSequencer, Requantizer
    from .nonlinear import GeluUnit, LayerNormUnit, SigmoidUnit, SoftmaxUnit
    from .residual import ResidualAdder
    from .selector import TokenSelector
    from .top import EncoderTop
    from .verilog import generate

    cfg = config
    designs = {
        "gemm_engine": lambda: GemmEngine(config=cfg),
        "requant": lambda: Requantizer(lanes=cfg.lanes, acc_bits=cfg.acc_bits, mult_bits=cfg.mult_bits,
                                       shift_bits=cfg.shift_bits),
        "gemm_sequencer": lambda: GemmSequencer(config=cfg),
        "residual": lambda: ResidualAdder(config=cfg),
    }
    if cfg.gelu:
        designs["gelu"] = lambda: GeluUnit(numerics=cfg.numerics)
    if cfg.sigmoid:
        designs["sigmoid"] = lambda: SigmoidUnit(numerics=cfg.numerics)
    if cfg.softmax:
        designs["softmax"] = lambda: SoftmaxUnit(numerics=cfg.numerics, max_len=cfg.max_tokens)
    if cfg.layernorm:
        designs["layernorm"] = lambda: LayerNormUnit(numerics=cfg.numerics, max_dim=cfg.max_embed_dim)
    if cfg.selector:
        designs["selector"] = lambda: TokenSelector(heads=cfg.max_heads, max_tokens=cfg.max_tokens,
                                                    max_dim=cfg.max_embed_dim)
    designs["encoder_top"] = lambda: EncoderTop(config=cfg)
    designs["axi_top"] = lambda: AxiTop(config=cfg)
    return {name: generate(make(), name) for name, make in designs.items()}


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
