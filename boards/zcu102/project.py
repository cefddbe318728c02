"""The ZCU102 project on disk, and running Vivado on it.

:func:`write_project` writes, atomically (a temporary folder renamed into place)::

    DIR/build.tcl                      the Vivado batch script (boards/zcu102/tcl.py)
    DIR/rtl/axi_top.v                  the accelerator (vitforge.hw.verilog.generate of AxiTop)
    DIR/rtl/vitforge_accel.v           the wrapper with Vivado's interface attributes
    DIR/constraints/vitforge.xdc       the constraints
    DIR/include/vitforge_accel.h       the register map and buffer layout for C drivers
    DIR/project.json                   preset, config, fit check, files with their SHA-256

:func:`run_vivado` runs ``vivado -mode batch`` in it and :func:`summarize` checks what it made:
the exit code, ``products/<name>.bit`` and ``.hwh``, WNS >= 0; it reads utilization from
``reports/utilization.rpt`` and returns the JSON summary ``board build`` prints. Every failure
raises :class:`VivadoError` with the log's last error lines and the log's path.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from vitforge.hw import axi
from vitforge.hw.config import HwConfig
from vitforge.hw.verilog import generate

from . import design, tcl
from .fit import check_fit

#: Files of the project, relative to its root.
TCL_FILE = "build.tcl"
CORE_FILE = f"rtl/{design.CORE}.v"
WRAPPER_FILE = f"rtl/{design.WRAPPER}.v"
XDC_FILE = "constraints/vitforge.xdc"
HEADER_FILE = "include/vitforge_accel.h"
MANIFEST_FILE = "project.json"
LOG_FILE = "vivado.log"
#: Environment variable naming the Vivado executable (else ``vivado`` on PATH).
VIVADO_ENV = "VIVADO"
#: Vivado output lines echoed as progress.
STEP_PREFIX = "vitforge: step"
#: Error lines of the log shown on a failure.
ERROR_LINES = 15


class VivadoMissing(FileNotFoundError):
    """Vivado is neither on PATH nor named by ``VIVADO``."""


class VivadoError(RuntimeError):
    """Vivado failed, or left no bitstream / .hwh, or timing is not met."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.lru_cache(maxsize=2)
def core_verilog(cfg: HwConfig) -> str:
    """The accelerator's Verilog (``axi_top``); cached per config in this process (elaborating the
    ``zcu102`` preset takes minutes)."""
    return generate(axi.AxiTop(config=cfg), design.CORE)


def project_files(cfg: HwConfig, preset: str, jobs: int) -> dict[str, str]:
    """``{relative path: text}`` of every generated file (``project.json`` aside)."""
    core = core_verilog(cfg)
    return {
        CORE_FILE: core,
        WRAPPER_FILE: design.wrapper_verilog(cfg, preset, core),
        XDC_FILE: tcl.xdc(cfg, preset),
        HEADER_FILE: design.c_header(cfg, preset),
        TCL_FILE: tcl.build_tcl(cfg, preset, widths=design.port_widths(core), rtl_files=[CORE_FILE, WRAPPER_FILE],
                                xdc_file=XDC_FILE, jobs=jobs),
    }


def write_project(cfg: HwConfig, preset: str, out: Path, *, jobs: int = tcl.DEFAULT_JOBS,
                  report: Path | None = None) -> dict:
    """Check the fit (:func:`~.fit.check_fit`, before anything is written), then write the project to ``out``.

    ``out`` is replaced as a whole: the files go to a temporary folder beside it, which is renamed
    into place. Returns the manifest (also written as ``project.json``).
    """
    fit = check_fit(cfg, preset, report)
    out = Path(out)
    files = project_files(cfg, preset, jobs)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for rel, text in files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        manifest = {
            "board": "zcu102", "part": tcl.PART, "preset": preset, "config": cfg.to_json(),
            "config_id": f"{axi.config_id(cfg):#010x}", "name": tcl.names(preset)["name"], "fit": fit,
            "files": {rel: _sha256(tmp / rel) for rel in sorted(files)},
        }
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def find_vivado() -> str:
    """The Vivado executable: ``$VIVADO`` if set, else ``vivado`` on PATH; :class:`VivadoMissing` otherwise."""
    named = os.environ.get(VIVADO_ENV)
    if named:
        exe = shutil.which(named)
        if exe is None:
            raise VivadoMissing(f"{VIVADO_ENV}={named} is not an executable")
        return exe
    exe = shutil.which("vivado")
    if exe is None:
        raise VivadoMissing(f"Vivado not found: no `vivado` on PATH and {VIVADO_ENV} is not set")
    return exe


def log_errors(log: Path, lines: int = ERROR_LINES) -> list[str]:
    """The last ``lines`` lines of ``log`` that report an error (``ERROR:``, ``CRITICAL WARNING:``,
    ``vitforge:`` errors); the log's last lines if none do."""
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return [f"(no log at {log})"]
    hits = [t for t in text if re.match(r"\s*(ERROR|CRITICAL WARNING)\b", t) or ("vitforge:" in t and "error" in t)]
    return (hits or text)[-lines:]


def run_vivado(root: Path, jobs: int, vivado: str) -> Path:
    """``vivado -mode batch -source build.tcl -tclargs JOBS`` in ``root``; returns the log's path.

    Prints the script's ``vitforge: step i/n`` lines to stderr as they come.

    Raises :class:`VivadoError` (with the log's error lines and path) on a non-zero exit code.
    """
    root = Path(root)
    log = root / LOG_FILE
    cmd = [vivado, "-mode", "batch", "-nojournal", "-log", str(log), "-source", str(root / TCL_FILE),
           "-tclargs", str(jobs)]
    with subprocess.Popen(cmd, cwd=root, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace") as proc:
        assert proc.stdout is not None
        for line in proc.stdout:  # one line per build step (the full output is in the log)
            if line.startswith(STEP_PREFIX):
                print(line.rstrip(), file=sys.stderr, flush=True)
    if proc.returncode:
        raise VivadoError(f"Vivado exited with code {proc.returncode}; last errors:\n  "
                          + "\n  ".join(log_errors(log)) + f"\nlog: {log}")
    return log


#: ``report_utilization`` rows read into the summary: (row label, summary key).
UTILIZATION_ROWS = (("CLB LUTs", "lut"), ("CLB Registers", "ff"), ("DSPs", "dsp"), ("Block RAM Tile", "bram36"))


def parse_utilization(text: str) -> dict[str, float]:
    """``{lut, ff, dsp, bram36}`` used, from ``report_utilization``'s tables (first row of each label)."""
    out: dict[str, float] = {}
    for label, key in UTILIZATION_ROWS:
        m = re.search(rf"^\|\s*{re.escape(label)}\*?\s*\|\s*([\d.]+)\s*\|", text, re.M)
        if m:
            value = float(m.group(1))
            out[key] = int(value) if value.is_integer() else value
    return out


def parse_timing(text: str) -> dict[str, float]:
    """``{wns_ns, period_ns}`` from ``reports/timing.txt`` (lines ``key value``)."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = float(parts[1])
            except ValueError as err:
                raise VivadoError(f"timing.txt: {line!r} is not `key number`") from err
    return out


def summarize(root: Path, preset: str, log: Path) -> dict:
    """The build's JSON summary; raises :class:`VivadoError` if a product is missing or WNS < 0."""
    root = Path(root)
    name = tcl.names(preset)["name"]
    products = {ext: root / tcl.PRODUCTS_DIR / f"{name}.{ext}" for ext in ("bit", "hwh")}
    missing = [str(p) for p in products.values() if not p.is_file()]
    if missing:
        raise VivadoError(f"Vivado exited 0 but left no {', '.join(missing)}; last errors:\n  "
                          + "\n  ".join(log_errors(log)) + f"\nlog: {log}")
    timing_txt = root / tcl.REPORTS_DIR / tcl.TIMING_TXT
    timing = parse_timing(timing_txt.read_text()) if timing_txt.is_file() else {}
    if "wns_ns" not in timing or "period_ns" not in timing:
        raise VivadoError(f"no WNS in {timing_txt}; log: {log}")
    wns, period = timing["wns_ns"], timing["period_ns"]
    util_rpt = root / tcl.REPORTS_DIR / tcl.UTILIZATION_RPT
    summary = {
        "preset": preset, "part": tcl.PART,
        "wns_ns": wns, "period_ns": period, "fmax_mhz": round(1000.0 / (period - wns), 2),
        "utilization": parse_utilization(util_rpt.read_text()) if util_rpt.is_file() else {},
        "products": {ext: {"path": str(p), "sha256": _sha256(p)} for ext, p in products.items()},
        "log": str(log),
    }
    if wns < 0:
        raise VivadoError(f"timing not met: WNS {wns} ns at a {period} ns clock (Fmax {summary['fmax_mhz']} MHz); "
                          f"see {root / tcl.REPORTS_DIR / tcl.TIMING_RPT}")
    return summary


__all__ = ["HEADER_FILE", "LOG_FILE", "MANIFEST_FILE", "TCL_FILE", "VIVADO_ENV", "VivadoError", "VivadoMissing",
           "core_verilog", "find_vivado", "log_errors", "parse_timing", "parse_utilization", "project_files",
           "run_vivado", "summarize", "write_project"]
