"""GEMM-layer MAC utilization from the cycle model (hw/cycles.py, exact against the RTL), per preset.

    python scripts/bench_gemm.py [--preset demo --preset zcu102] [--layer blocks.0] [--json]

Each preset runs the model it is built for (``demo``: the demo ViT; ``zcu102``: DeiT-T, 197 tokens,
D=192, 3 heads), dense, compiled from its shapes alone. Per GEMM layer of ``--layer`` (default: the
first encoder block) it prints MACs, cycles, the MAC utilization ``MACs / (cycles x pe_rows x lanes)``,
the tile-occupancy bound (M and N rounded up to the array) and their ratio; then the block's GEMMs
together and the whole block (every instruction's cycles).
"""

from __future__ import annotations

import argparse
import json
import sys

from vitforge.hw.config import get_preset
from vitforge.hw.cycles import CycleModel
from vitforge.sw.latency import shape_program
from vitforge.sw.vit import get_config

#: The model each preset is sized for.
PRESET_MODELS = {"demo": "demo", "zcu102": "deit-tiny"}


def _kind(row: dict) -> str:
    if not row["b_act"]:
        return "x W"
    return "x act^T" if row["b_trans"] else "x act"


def measure(preset: str, layer: str) -> dict:
    hw, model = get_preset(preset), PRESET_MODELS[preset]
    prog = shape_program(get_config(model), hw)
    cm = CycleModel(hw, "axi")
    rows = [r for r in cm.gemm_layers(prog) if r["layer"] == layer]
    per_layer = cm.program_cycles(prog)["per_layer"]
    macs, cycles = sum(r["macs"] for r in rows), sum(r["cycles"] for r in rows)
    bound = macs / sum(r["macs"] / r["bound"] for r in rows)  # the padded work of all of them together
    return {"preset": preset, "model": model, "layer": layer, "pe": [hw.pe_rows, hw.pe_cols], "gemms": rows,
            "gemm_total": {"macs": macs, "cycles": cycles, "utilization": macs / (cycles * hw.macs),
                           "bound": bound, "of_bound": macs / (cycles * hw.macs) / bound},
            "block": {"cycles": per_layer[layer], "utilization": macs / (per_layer[layer] * hw.macs)}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", action="append", choices=sorted(PRESET_MODELS))
    ap.add_argument("--layer", default="blocks.0")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    results = [measure(p, args.layer) for p in args.preset or ["demo", "zcu102"]]
    if args.json:
        print(json.dumps(results, sort_keys=True))
        return 0
    for res in results:
        print(f"{res['preset']} ({res['pe'][0]}x{res['pe'][1]} PE), {res['model']}, {res['layer']}:")
        head = f"  {'GEMM (m x k x n)':<26}{'count':>6}{'MACs':>12}{'cycles':>11}"
        print(f"{head}{'util':>8}{'bound':>8}{'of bound':>10}")
        for r in res["gemms"]:
            shape = f"{r['m']}x{r['k']}x{r['n']} {_kind(r)}" + (" mean" if r["mean"] else "")
            print(f"  {shape:<26}{r['count']:>6}{r['macs']:>12,}{r['cycles']:>11,}{r['utilization']:>8.1%}"
                  f"{r['bound']:>8.1%}{r['of_bound']:>10.1%}")
        t = res["gemm_total"]
        print(f"  {'all GEMMs':<26}{'':>6}{t['macs']:>12,}{t['cycles']:>11,}{t['utilization']:>8.1%}"
              f"{t['bound']:>8.1%}{t['of_bound']:>10.1%}")
        b = res["block"]
        print(f"  whole block: {b['cycles']:,} cycles, MAC utilization {b['utilization']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
