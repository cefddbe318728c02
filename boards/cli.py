"""`vitforge board build`: the ZCU102 Vivado project of a preset, and its bitstream where Vivado is installed.

Exit codes: 0 built (bitstream, .hwh, timing met); :data:`EXIT_NO_VIVADO` the project was written
but Vivado is missing; :data:`EXIT_VIVADO_FAILED` Vivado failed, left no products or missed timing
(the log's last errors and its path are printed); 2 bad arguments or a preset that does not fit.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vitforge.hw.config import PRESETS, get_preset

#: The project was written; Vivado is not installed here (argparse's usage errors are 2).
EXIT_NO_VIVADO = 3
#: Vivado ran and failed, left no .bit / .hwh, or the design misses timing.
EXIT_VIVADO_FAILED = 4
#: Boards ``board build`` knows.
BOARDS = ("zcu102",)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("board", help="build the accelerator for a board (ZCU102: Vivado project and bitstream)")
    board = p.add_subparsers(dest="board_command", metavar="ACTION", required=True)
    b = board.add_parser(
        "build", help="write the board's Vivado project for a preset and run Vivado where it is installed",
        description="Writes DIR (the accelerator's Verilog, its wrapper, build.tcl, the C header) atomically, then "
                    "runs Vivado (on PATH or $VIVADO) and checks its exit code, the .bit/.hwh and WNS >= 0. "
                    f"Exit codes: 0 built; {EXIT_NO_VIVADO} Vivado missing (the project is written); "
                    f"{EXIT_VIVADO_FAILED} Vivado failed or timing not met; 2 bad arguments or the preset does "
                    "not fit the board.")
    b.add_argument("--board", choices=BOARDS, default="zcu102")
    b.add_argument("--preset", default="zcu102", help=f"hardware preset ({', '.join(sorted(PRESETS))})")
    b.add_argument("--out", type=Path, required=True, metavar="DIR", help="project folder (replaced as a whole)")
    b.add_argument("--jobs", type=int, default=None, metavar="N", help="Vivado's parallel jobs (default 4)")
    b.add_argument("--report", type=Path, default=None, metavar="JSON",
                   help="resource figures from `vitforge rtl report --preset P --json` for the fit check "
                        "(default: the figures recorded for the preset)")
    b.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    from .zcu102 import project, tcl

    jobs = tcl.DEFAULT_JOBS if args.jobs is None else args.jobs
    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, not {jobs}")
    cfg = get_preset(args.preset)
    manifest = project.write_project(cfg, args.preset, args.out, jobs=jobs, report=args.report)
    summary = {"project": str(args.out), "preset": args.preset, "board": args.board, "part": tcl.PART,
               "config_id": manifest["config_id"], "fit": manifest["fit"], "files": manifest["files"]}
    try:
        vivado = project.find_vivado()
    except project.VivadoMissing as err:
        print(json.dumps({**summary, "vivado": None}, indent=2, sort_keys=True))
        print(f"vitforge board build: wrote the {args.board} project to {args.out} ({project.TCL_FILE}, rtl/, "
              f"{project.HEADER_FILE}); no bitstream: {err}.\nOn a machine with Vivado (with its ZCU102 board "
              f"files), run:\n  vitforge board build --board {args.board} --preset {args.preset} --out {args.out}",
              file=sys.stderr)
        return EXIT_NO_VIVADO
    print(f"vitforge board build: running {vivado} on {args.out / project.TCL_FILE} "
          f"(log: {args.out / project.LOG_FILE})", file=sys.stderr)
    try:
        log = project.run_vivado(args.out, jobs, vivado)
        built = project.summarize(args.out, args.preset, log)
    except project.VivadoError as err:
        print(f"vitforge board build: {err}", file=sys.stderr)
        return EXIT_VIVADO_FAILED
    print(json.dumps({**summary, "vivado": vivado, **built}, indent=2, sort_keys=True))
    return 0
