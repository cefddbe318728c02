"""Resources of one preset's GEMM sequencer synthesized alone, its GemmEngine a blackbox.

    nice -n 10 python scripts/synth_sequencer.py --preset zcu102 [--set operand_cache_words=0] [--json]

What ``vitforge rtl report``'s ``gemm_sequencer`` row counts (the operand buffers, the reader, the
stepper, the write-back, the mean divider and the operand cache), without the PE array and the
requantizer (``scripts/synth_gemm.py`` measures those), so a change to the sequencer is measured in
minutes on zcu102 (measured: 148 s without the operand cache, 1,086 s with it beside other jobs). Not
cached: every run synthesizes it afresh (hw/synth.py's Yosys script).
"""

from __future__ import annotations

import argparse
import json

from vitforge.hw import synth
from vitforge.hw.config import get_preset, with_overrides
from vitforge.hw.gemm import GemmSequencer

TOP = "gemm_sequencer"


def measure(cfg) -> dict:
    """``{dsp, lut, ff, bram36, ...}`` of the sequencer's modules but the engine's (hw/synth.py)."""
    result = synth.module_report_without(GemmSequencer(config=cfg), TOP, f"{TOP}.engine")
    return {**result, "left_out": f"{TOP}.engine and its {len(result['left_out']) - 1} submodules"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a HwConfig field (JSON value), e.g. operand_cache_words=0")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        cfg = with_overrides(get_preset(args.preset), args.set)
    except ValueError as e:
        raise SystemExit(f"--set: {e}") from None
    result = measure(cfg)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(f"{args.preset} {TOP} (engine left out): {result['dsp']} DSP, {result['lut']:,} LUT, "
              f"{result['ff']:,} FF, {result['bram36']} BRAM36 ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
