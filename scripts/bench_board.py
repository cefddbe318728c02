"""The board backend on simulated gateware: python scripts/bench_board.py --artifact DIR [--images 8].

Runs the artifact's first test images through the board backend's own code on the PYNQ stand-in
(the Verilator model of axi_top), and through the rtl backend's driver; prints JSON: logits exact
against the golden model, cycles (total and per layer) equal to the rtl backend's, wall time.
Needs the board extra (PYNQ). Exit code 1 unless every image is exact with equal cycles.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from vitforge.boards.zcu102.simcheck import compare_on_rtl


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifact", type=Path, required=True)
    p.add_argument("--images", type=int, default=8)
    args = p.parse_args()
    torch.set_num_threads(1)
    res = compare_on_rtl(args.artifact, args.images)
    print(json.dumps(res, indent=2, sort_keys=True))
    ok = res["board_exact"] == res["images"] and res["cycles_equal"] and res["layer_cycles_equal"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
