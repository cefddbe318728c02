"""Resources of one preset's GEMM engine synthesized alone (hw/synth.py's Yosys script and cache).

    python scripts/synth_gemm.py --preset zcu102 [--set dsp_packing=true --set pe_rows=16] [--json]

Prints the engine's totals (PE array and requantizer) and ``own``, the PE array alone (the
``gemm_array`` row of ``vitforge rtl report``'s ``per_block``), with the config's accumulator
width. Minutes for ``zcu102`` (the whole design takes about 20), so a change to the array is
measured here and added to the recorded whole-design figure.
"""

from __future__ import annotations

import argparse
import json

from vitforge.hw.config import get_preset, with_overrides
from vitforge.hw.gemm import GemmEngine
from vitforge.hw.synth import module_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a HwConfig field (JSON value), e.g. dsp_packing=true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        cfg = with_overrides(get_preset(args.preset), args.set)
    except ValueError as e:
        raise SystemExit(f"--set: {e}") from None
    report = module_report(GemmEngine(config=cfg), "gemm_engine")
    out = {"preset": args.preset, "set": args.set, "pe_rows": cfg.pe_rows, "pe_cols": cfg.pe_cols,
           "dsp_packing": cfg.dsp_packing, "pe_acc_bits": cfg.pe_acc_bits, "dsp_estimate": cfg.dsp_estimate,
           **{k: report[k] for k in ("dsp", "lut", "ff", "own", "yosys", "seconds")}}
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        own = out["own"]
        print(f"{args.preset} {cfg.pe_rows}x{cfg.pe_cols} packing={cfg.dsp_packing} acc={cfg.pe_acc_bits} bits: "
              f"engine {out['dsp']} DSP / {out['lut']:,} LUT / {out['ff']:,} FF; "
              f"PE array {own['dsp']} DSP / {own['lut']:,} LUT / {own['ff']:,} FF ({out['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
