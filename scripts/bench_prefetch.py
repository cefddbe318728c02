"""Weights streamed while computing: DeiT on zcu102 with blocking LOADs (the preset before issue #13
item 4) and with LOADs beside compute, from the cycle model (hw/cycles.py, exact against the RTL).

    python scripts/bench_prefetch.py [--json]

Per model (DeiT-T dense, DeiT-S dense, DeiT-S with selectors before blocks 3, 6, 9 at cumulative keep
0.7, 0.49, 0.343), compiled from its shapes alone on the AXI port at 300 MHz: total cycles and ms, the
GEMM and row-wise cycles, what LOAD and SYNC leave on the controller's timeline, the loader's transfer
cycles and the share of them hidden behind compute. "before": ``weight_depth`` 9216, ``param_depth``
64 and every LOAD blocking (``compile_model(..., overlap_loads=False)``); "after": the zcu102 preset.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from vitforge.hw import compiler as hwp
from vitforge.hw.config import get_preset
from vitforge.hw.cycles import CycleModel
from vitforge.sw import program as swp
from vitforge.sw.latency import CycleLatency, tokens_per_block
from vitforge.sw.vit import get_config

#: DynamicViT's schedule (issue #13): selectors before blocks 3, 6, 9, cumulative keep rates.
SELECTOR_BLOCKS, KEEP = (3, 6, 9), (0.7, 0.49, 0.343)
MODELS = (("deit-tiny", False), ("deit-small", False), ("deit-small", True))


def measure(name: str, pruned: bool, hw, overlap: bool) -> dict:
    cfg = get_config(name)
    tokens = [cfg.num_tokens] * cfg.depth
    if pruned:
        cfg = cfg.with_selectors(SELECTOR_BLOCKS, KEEP)
        tokens = tokens_per_block(cfg, KEEP)
    prog = hwp.compile_model(swp.hw_model(swp.zero_int_model(cfg, hw.numerics)), hw, overlap_loads=overlap)
    kept = CycleLatency(hw).select_tokens(cfg, tokens)
    res = CycleModel(hw, "axi").op_cycles(prog, kept)
    per_op, total = res["per_op"], res["total"]
    exposed = per_op.get("LOAD", 0) + per_op.get("SYNC", 0)
    return {"model": name, "pruned": pruned, "overlap": overlap, "instructions": len(prog.instrs),
            "fits_imem": len(prog.instrs) <= hw.imem_depth, "cycles": total, "ms": total / (hw.clock_mhz * 1e3),
            "per_op": per_op, "load_sync": exposed, "load_transfer": res["load_transfer"],
            "hidden": 1 - exposed / res["load_transfer"] if overlap else 0.0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    after = get_preset("zcu102")
    before = dataclasses.replace(after, weight_depth=9216, param_depth=64)
    rows = [measure(name, pruned, hw, overlap) for name, pruned in MODELS
            for hw, overlap in ((before, False), (after, True))]
    if args.json:
        print(json.dumps(rows, sort_keys=True))
        return 0
    print(f"{'model':<22}{'LOADs':<10}{'cycles':>12}{'ms':>8}{'GEMM':>11}{'LOAD+SYNC':>11}{'transfer':>10}"
          f"{'hidden':>8}")
    for r in rows:
        label = r["model"] + (" pruned" if r["pruned"] else " dense")
        print(f"{label:<22}{'overlap' if r['overlap'] else 'blocking':<10}{r['cycles']:>12,}{r['ms']:>8.2f}"
              f"{r['per_op'].get('GEMM', 0):>11,}{r['load_sync']:>11,}{r['load_transfer']:>10,}"
              f"{r['hidden']:>8.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
