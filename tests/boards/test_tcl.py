"""boards/zcu102/tcl.py: the generated build.tcl run in tclsh with stub Vivado commands (tests/boards/stubs.tcl).

Every Vivado call is recorded; the assertions derive what the block design must hold from the
HwConfig and hw/axi.py (never restated): the part and board part, the PS's ports, widths and
clock, the module reference and its connections, the interrupt, the addresses, the order of the
build steps and the products under one basename. Hand edits of a width, the clock or an address
in the generated script make the run or the checks fail (the mutation tests).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from vitforge.boards.zcu102 import design, project, tcl
from vitforge.hw import axi
from vitforge.hw.config import get_preset

from .conftest import PRESET, write_runner

CFG = get_preset(PRESET)
#: The ZCU102's device (UG1182), as the board's documentation names it.
ZCU102_PART = "xczu9eg-ffvb1156-2-e"
TCLSH = shutil.which("tclsh")
pytestmark = pytest.mark.skipif(TCLSH is None, reason="tclsh not installed (Debian: apt-get install tcl)")


class TclError(Exception):
    """The script stopped with an error in tclsh."""


@dataclass
class Call:
    cmd: str
    args: list[str]

    def opt(self, name: str) -> str | None:
        return self.args[self.args.index(name) + 1] if name in self.args else None


@pytest.fixture
def files(demo_files) -> dict[str, str]:
    return demo_files


def run_tcl(files: dict[str, str], root: Path, script: str | None = None, hwh_under: str = "gen",
            extra: str = "") -> list[Call]:
    """Write the project's files to ``root`` (``script`` replaces build.tcl) and run build.tcl under the
    stubs (``extra``: Tcl run after them, e.g. to redefine one)."""
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    if script is not None:
        (root / project.TCL_FILE).write_text(script)
    calls_file = root / "calls.txt"
    runner = write_runner(files, root, root / "runner.tcl", calls_file, hwh_under=hwh_under, extra=extra)
    proc = subprocess.run([TCLSH, str(runner)], capture_output=True, text=True, check=False, timeout=60)
    if proc.returncode:
        raise TclError(proc.stderr.strip().splitlines()[0] if proc.stderr.strip() else proc.stdout)
    return [Call(parts[0], parts[1:]) for parts in
            (line.split("\x1f") for line in calls_file.read_text().splitlines())]


def first(calls: list[Call], cmd: str, *contains: str) -> int:
    """Index of the first call of ``cmd`` whose arguments include every string of ``contains``."""
    for i, c in enumerate(calls):
        if c.cmd == cmd and all(any(s in a for a in c.args) for s in contains):
            return i
    raise AssertionError(f"no {cmd} call with {contains}")


def range_bytes(text: str) -> int:
    m = re.fullmatch(r"(\d+)([KMG])", text)
    assert m, text
    return int(m.group(1)) << {"K": 10, "M": 20, "G": 30}[m.group(2)]


def check(calls: list[Call], root: Path, files: dict[str, str]) -> None:
    """Everything the block design must hold for CFG (port widths from the accelerator's Verilog)."""
    widths = design.port_widths(files[project.CORE_FILE])
    assert widths["m_axi_wdata"] == CFG.bus_bits and widths["m_axi_awaddr"] == CFG.axi_addr_bits
    # Part and board part: the newest of the installed versions.
    create = calls[first(calls, "create_project")]
    assert create.opt("-part") == ZCU102_PART
    board = calls[first(calls, "set_property", "board_part")]
    assert board.args[1] == "xilinx.com:zcu102:part0:3.4"
    # The PS: newest IP, board preset, HP0 at the bus width, HPM0 on, PL clock 0 at the preset's clock.
    ps = calls[first(calls, "create_bd_cell", "zynq_ultra_ps_e")]
    assert ps.opt("-vlnv") == "xilinx.com:ip:zynq_ultra_ps_e:10.2"
    assert 'apply_board_preset "1"' in calls[first(calls, "apply_bd_automation")].opt("-config")
    conf = dict(zip(*[iter(calls[first(calls, "set_property", "PSU__SAXIGP2__DATA_WIDTH")].args[1].split())] * 2,
                    strict=True))
    assert int(conf["CONFIG.PSU__SAXIGP2__DATA_WIDTH"]) == CFG.bus_bits == widths["m_axi_wdata"]
    assert float(conf["CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ"]) == CFG.clock_mhz
    assert conf["CONFIG.PSU__USE__S_AXI_GP2"] == conf["CONFIG.PSU__USE__M_AXI_GP0"] == conf["CONFIG.PSU__USE__IRQ0"]
    assert conf["CONFIG.PSU__USE__S_AXI_GP2"] == "1"
    # The accelerator as a module reference; the script checks the widths Vivado inferred on it.
    ref = calls[first(calls, "create_bd_cell", "module")]
    assert ref.opt("-reference") == design.WRAPPER and ref.args[-1] == design.ACCEL_CELL
    for intf, param in ((design.MASTER_INTF, "DATA_WIDTH"), (design.MASTER_INTF, "ADDR_WIDTH"),
                        (design.LITE_INTF, "DATA_WIDTH"), (design.LITE_INTF, "ADDR_WIDTH")):
        first(calls, "get_property", f"CONFIG.{param}", f"{design.ACCEL_CELL}/{intf}")
    # Buses, clock, reset, interrupt.
    acc = design.ACCEL_CELL
    assert first(calls, "connect_bd_intf_net", f"{acc}/{design.MASTER_INTF}", "S_AXI_HP0_FPD") >= 0
    assert first(calls, "connect_bd_intf_net", "M_AXI_HPM0_FPD") >= 0
    assert first(calls, "connect_bd_intf_net", f"{acc}/{design.LITE_INTF}") >= 0
    assert first(calls, "connect_bd_net", f"{acc}/irq", "pl_ps_irq0") >= 0
    assert first(calls, "connect_bd_net", "pl_clk0", f"{acc}/clk", "saxihp0_fpd_aclk", "maxihpm0_fpd_aclk") >= 0
    assert first(calls, "connect_bd_net", "peripheral_reset", f"{acc}/rst") >= 0  # rst is active high
    first(calls, "create_bd_cell", "proc_sys_reset")
    # Addresses: a register window that covers the profile, aligned to its size; DDR for the master.
    lite = calls[first(calls, "assign_bd_address", f"{acc}/{design.LITE_INTF}/reg0")]
    base, size = int(lite.opt("-offset"), 16), range_bytes(lite.opt("-range"))
    assert size == 1 << widths["s_axil_awaddr"] == 1 << axi.reg_addr_bits(CFG)
    assert size >= axi.PROFILE_BASE + 4 * CFG.imem_depth and base % size == 0
    ddr = calls[first(calls, "assign_bd_address", "HP0_DDR_LOW")]
    assert ddr.opt("-target_address_space") == f"{acc}/{design.MASTER_INTF}"
    # The build steps in order.
    order = [first(calls, "create_project"), first(calls, "create_bd_design"), first(calls, "create_bd_cell"),
             first(calls, "assign_bd_address"), first(calls, "validate_bd_design"), first(calls, "make_wrapper"),
             first(calls, "add_files", "-fileset", "constrs_1"), first(calls, "launch_runs", "write_bitstream"),
             first(calls, "wait_on_run"), first(calls, "open_run"), first(calls, "report_utilization"),
             first(calls, "report_timing_summary")]
    assert order == sorted(order)
    # Products under one basename.
    name = tcl.names(PRESET)["name"]
    assert (root / tcl.PRODUCTS_DIR / f"{name}.bit").read_text() == "bitstream"
    assert (root / tcl.PRODUCTS_DIR / f"{name}.hwh").read_text() == "<hwh/>"
    timing = project.parse_timing((root / tcl.REPORTS_DIR / tcl.TIMING_TXT).read_text())
    assert timing == {"wns_ns": 0.25, "period_ns": 1000 / CFG.clock_mhz}


@pytest.mark.parametrize("hwh_under", ["gen", "srcs"])
def test_script_builds_the_block_design(files, tmp_path, hwh_under):
    check(run_tcl(files, tmp_path, hwh_under=hwh_under), tmp_path, files)


def test_a_missing_board_part_stops_the_script(files, tmp_path):
    with pytest.raises(TclError, match="vitforge: no ZCU102 board part"):
        run_tcl(files, tmp_path, extra="proc get_board_parts {args} { return {} }")


def _mutations():
    bus, clock, window = CFG.bus_bits, f"{CFG.clock_mhz:g}", 1 << axi.reg_addr_bits(CFG)
    other = 2 * bus
    return {
        "inferred width": (f"m_axi DATA_WIDTH {bus}", f"m_axi DATA_WIDTH {other}"),
        "HP0 width": (f"PSU__SAXIGP2__DATA_WIDTH {{{bus}}}", f"PSU__SAXIGP2__DATA_WIDTH {{{other}}}"),
        "clock": (f"PL0_REF_CTRL__FREQMHZ {{{clock}}}", f"PL0_REF_CTRL__FREQMHZ {{{2 * CFG.clock_mhz:g}}}"),
        "clock check": (f"abs($vf_clock - {clock})", f"abs($vf_clock - {2 * CFG.clock_mhz:g})"),
        "window size": (f"-range {tcl.size_text(window)}", f"-range {tcl.size_text(window // 2)}"),
        "window base": (f"-offset {design.REG_BASE:#010x}", f"-offset {design.REG_BASE + window // 2:#010x}"),
        "master address space": ("accel/m_axi] [get_bd_addr_segs $vf_seg]",
                                 "accel/s_axil] [get_bd_addr_segs $vf_seg]"),
    }


@pytest.mark.parametrize("name", sorted(_mutations()))
def test_hand_edits_are_caught(files, tmp_path, name):
    old, new = _mutations()[name]
    script = files[project.TCL_FILE]
    assert old in script, f"the generated script no longer contains {old!r}"
    with pytest.raises((AssertionError, TclError)):
        calls = run_tcl(files, tmp_path, script.replace(old, new))
        check(calls, tmp_path, files)
