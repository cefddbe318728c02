"""Shared helpers of the board tests: the demo project's files, and running build.tcl in tclsh under
stub Vivado commands (tests/boards/stubs.tcl)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vitforge.boards.zcu102 import design, project, tcl
from vitforge.hw.config import get_preset

#: The preset the board tests generate (small: its Verilog elaborates in seconds).
PRESET = "demo"
STUBS = Path(__file__).with_name("stubs.tcl")


@pytest.fixture(scope="session")
def demo_files() -> dict[str, str]:
    """``project_files`` of the demo preset (generated once per session)."""
    return project.project_files(get_preset(PRESET), PRESET, tcl.DEFAULT_JOBS)


def inferred(files: dict[str, str]) -> str:
    """What Vivado infers on the module reference: the wrapper's X_INTERFACE_PARAMETERs, as a Tcl dict."""
    out = []
    for intf in (design.LITE_INTF, design.MASTER_INTF):
        m = re.search(rf'X_INTERFACE_INFO = "\S+ {intf} \w+" \*\)\s+\(\* X_INTERFACE_PARAMETER = "([^"]*)"',
                      files[project.WRAPPER_FILE])
        assert m, intf
        params = " ".join(kv.strip() for kv in m.group(1).split(","))
        out.append(f"{design.ACCEL_CELL}/{intf} {{{params}}}")
    return " ".join(out)


def write_runner(files: dict[str, str], root: Path, runner: Path, calls_file: Path, *, hwh_under: str = "gen",
                 extra: str = "") -> Path:
    """A Tcl file that loads the stubs (then ``extra``) and sources ``root``/build.tcl, recording calls
    in ``calls_file``; what Vivado would infer comes from ``files``' wrapper."""
    clock_mhz = get_preset(PRESET).clock_mhz
    runner.write_text(f"set ::vf_calls_file {{{calls_file}}}\nset ::hwh_under {hwh_under}\n"
                      f"set ::period_ns {1000 / clock_mhz}\nset ::inferred {{{inferred(files)}}}\n"
                      f"source {{{STUBS}}}\n{extra}\nsource {{{root / project.TCL_FILE}}}\nclose $::vf_calls\n")
    return runner
