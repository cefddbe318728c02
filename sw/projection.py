"""`vitforge latency`: a ViT's latency on a hardware preset, projected with the RTL-calibrated cycle model
(hw/cycles.py over the program hw/compiler.py compiles for the model's shapes; :class:`.latency.CycleLatency`)."""

from __future__ import annotations

import argparse
import dataclasses
import json

from vitforge.hw.timing import PORTS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "latency", help="project a ViT's latency on a hardware preset with the RTL-calibrated cycle model",
        description="Compiles the model's program for the preset (hw/compiler.py) and counts its cycles with "
        "hw/cycles.py's model (exact against the RTL on the stream port). A model projection, not a "
        "measurement. Models that do not fit the preset are projected on the same array and clock with "
        "scratchpads grown to hold them ('fits': false).",
    )
    p.add_argument("--model", default="demo", help="ViT preset: demo, deit-tiny, deit-small, deit-base")
    p.add_argument("--preset", default="zcu102", help="hardware preset (default zcu102)")
    p.add_argument("--keep", type=float, nargs="+", default=None, metavar="RATE",
                   help="cumulative keep rates, one per token selector (default: dense)")
    p.add_argument("--selector-blocks", type=int, nargs="+", default=None, metavar="B",
                   help="blocks the selectors precede (default: evenly spaced, e.g. 3 6 9 for 3 of 12 blocks)")
    p.add_argument("--port", choices=PORTS, default="axi",
                   help="memory port: axi (hw/axi.py AxiTop: the rtl backend's and the board's; default) or "
                        "stream (EncoderTop's ideal streams)")
    p.add_argument("--json", action="store_true", help="print the projection as JSON")
    p.set_defaults(func=run_latency)


def default_selector_blocks(depth: int, count: int) -> tuple[int, ...]:
    """``count`` selector positions spread evenly over ``depth`` blocks (3 of 12: blocks 3, 6, 9)."""
    blocks = tuple(round((i + 1) * depth / (count + 1)) for i in range(count))
    if count >= depth or len(set(blocks)) != count or blocks[0] < 1:
        raise ValueError(f"cannot place {count} selectors in {depth} blocks; give --selector-blocks")
    return blocks


def grown_preset(hw, cfg):
    """``hw`` with its model limits raised to ``cfg`` and its scratchpads grown to the least that holds
    them (the activation scratchpad to its largest: addresses cost no cycles); array, clock, bus kept."""
    limits = dict(max_tokens=max(hw.max_tokens, cfg.num_tokens), max_embed_dim=max(hw.max_embed_dim, cfg.embed_dim),
                  max_mlp_dim=max(hw.max_mlp_dim, cfg.mlp_dim), max_heads=max(hw.max_heads, cfg.num_heads))
    roomy = dataclasses.replace(hw, **limits, act_depth=1 << 20, weight_depth=1 << 20, param_depth=1 << 20)
    return dataclasses.replace(roomy, weight_depth=max(hw.weight_depth, roomy.layer_weight_words),
                               param_depth=max(hw.param_depth, roomy.layer_param_words))


def project(model: str, preset: str, keep=None, selector_blocks=None, port: str = "axi") -> dict:
    """The projection ``vitforge latency`` prints (see :func:`register`)."""
    from vitforge.hw.config import get_preset

    from .latency import CycleLatency, model_macs, tokens_per_block
    from .vit import get_config

    cfg = get_config(model)
    keep = tuple(keep or ())
    if selector_blocks is not None and len(selector_blocks) != len(keep):
        raise ValueError(f"{len(selector_blocks)} selector blocks need as many --keep rates, got {len(keep)}")
    blocks = tuple(selector_blocks) if selector_blocks is not None else (
        default_selector_blocks(cfg.depth, len(keep)) if keep else ())
    cfg = cfg.with_selectors(blocks, keep)
    tokens = tokens_per_block(cfg)
    hw = get_preset(preset)
    out = {"kind": "model", "model": model, "preset": preset, "port": port, "fits": True}
    lat = CycleLatency(hw, port)
    try:
        lat.program(cfg)
    except ValueError as err:
        lat = CycleLatency(grown_preset(hw, cfg), port)
        try:  # does it compile with room enough? Otherwise the shape itself is what the compiler refuses.
            lat.program(cfg)
        except ValueError as shape_err:
            raise ValueError(f"{model} cannot be compiled for {preset} (even with the scratchpads grown): "
                             f"{shape_err}") from None
        out.update(fits=False, note=f"{model} does not fit {preset} ({err}); projected on the same "
                   f"{hw.pe_rows}x{hw.pe_cols} array at {hw.clock_mhz:g} MHz with scratchpads grown to hold it "
                   f"(weight_depth {lat.hw.weight_depth}, param_depth {lat.hw.param_depth})")
    res = lat.cycles(cfg, tokens)
    prog = lat.program(cfg)
    out.update(cycles=res["total"], clock_mhz=lat.clock_mhz, ms=res["total"] / (lat.clock_mhz * 1e3),
               gmacs=model_macs(cfg, tokens) / 1e9, per_layer=res["per_layer"], selector_blocks=list(blocks),
               keep_rates=list(keep), tokens_per_block=[round(t) for t in tokens], instructions=len(prog.instrs),
               fits_imem=len(prog.instrs) <= lat.hw.imem_depth)
    return out


def run_latency(args: argparse.Namespace) -> int:
    out = project(args.model, args.preset, args.keep, args.selector_blocks, args.port)
    if args.json:
        print(json.dumps(out, sort_keys=True))
        return 0
    print(f"{out['model']} on {out['preset']} ({out['port']} port): {out['cycles']} cycles = {out['ms']:.3f} ms at "
          f"{out['clock_mhz']:g} MHz, {out['gmacs']:.3f} GMACs (model projection, not a measurement)")
    if not out["fits"]:
        print(f"note: {out['note']}")
    for layer, cycles in out["per_layer"].items():
        print(f"  {layer:<14} {cycles:>12}")
    return 0
