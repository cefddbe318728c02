"""The Vivado batch script of the ZCU102 project (``build.tcl``), generated from the config.

:func:`build_tcl` writes one script that, run as ``vivado -mode batch -source build.tcl
-tclargs JOBS`` in the project folder:

1. creates the project for :data:`PART` with the newest installed ZCU102 board part
   (``get_board_parts``; no version is hard-coded) and adds the accelerator's Verilog;
2. builds the block design: ``zynq_ultra_ps_e`` (its newest version, ``get_ipdefs``) with the
   board preset; PL clock 0 at the preset's ``clock_mhz`` (checked against the PLL's actual
   frequency); ``S_AXI_HP0_FPD`` at ``bus_bits`` for the accelerator's memory master;
   ``M_AXI_HPM0_FPD`` through a SmartConnect to the register file; ``pl_ps_irq0`` from the
   interrupt; a ``proc_sys_reset``; the accelerator as a module reference, whose inferred
   interface widths are checked against the config;
3. assigns addresses (the register window :func:`~.design.address_map`, and DDR for the master),
   validates, makes the HDL wrapper and adds the constraints;
4. runs synthesis and implementation to ``write_bitstream``, checks that both runs completed;
5. writes the utilization and timing reports and ``reports/timing.txt`` (WNS, clock period);
6. copies ``<name>.bit`` and the ``.hwh`` (found under ``.gen`` or ``.srcs``) to ``products/``
   under one basename, as PYNQ needs them.

Every failure stops the script with an ``error`` whose message starts with ``vitforge:``, so
Vivado exits non-zero and the log says why.
"""

from __future__ import annotations

from vitforge.hw import axi
from vitforge.hw.config import HwConfig

from . import design

#: The ZCU102's device.
PART = "xczu9eg-ffvb1156-2-e"
#: Board part pattern (the version is looked up).
BOARD_PATTERN = "xilinx.com:zcu102:part0:*"
#: IP definitions looked up by pattern (newest installed version).
PS_IP = "xilinx.com:ip:zynq_ultra_ps_e:*"
RESET_IP = "xilinx.com:ip:proc_sys_reset:*"
SMARTCONNECT_IP = "xilinx.com:ip:smartconnect:*"
#: Vivado project folder, reports and products, relative to the project root.
VIVADO_DIR, REPORTS_DIR, PRODUCTS_DIR = "vivado", "reports", "products"
#: Files the script writes into REPORTS_DIR.
UTILIZATION_RPT, TIMING_RPT, TIMING_TXT = "utilization.rpt", "timing_summary.rpt", "timing.txt"
#: The PLL's actual PL clock may differ from the request by this fraction (divider granularity).
CLOCK_TOLERANCE = 0.01
#: Build steps, in order (the script prints ``vitforge: step i/n: NAME``).
STEPS = ("project", "block_design", "addresses", "wrapper", "bitstream", "reports", "products")
#: The clock the PS block's constraints create for pl_clk0.
PS_CLOCK = "clk_pl_0"
#: Default parallel jobs of ``launch_runs``.
DEFAULT_JOBS = 4


def size_text(nbytes: int) -> str:
    """A power-of-two size as Vivado's ``-range`` writes it: ``8K``, ``1M``, ``2G``."""
    if nbytes <= 0 or nbytes & (nbytes - 1):
        raise ValueError(f"an address range must be a positive power of two, not {nbytes}")
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if nbytes >= 1 << shift:
            return f"{nbytes >> shift}{unit}"
    raise ValueError(f"an address range must be at least 1K, not {nbytes}")


def names(preset: str) -> dict[str, str]:
    """The basename of the products and the names Vivado derives from it."""
    name = f"vitforge_{preset}"
    return {"name": name, "bd": f"{name}_bd", "wrapper": f"{name}_bd_wrapper"}


def build_tcl(cfg: HwConfig, preset: str, *, widths: dict[str, int], rtl_files: list[str], xdc_file: str,
              jobs: int = DEFAULT_JOBS) -> str:
    """The script's text for ``cfg`` (preset ``preset``).

    Args:
        cfg: the hardware config the accelerator was generated from.
        preset: its preset name (the products' basename is ``vitforge_<preset>``).
        widths: the accelerator's port widths (:func:`~.design.port_widths` of its Verilog).
        rtl_files: Verilog files relative to the project root (the accelerator and its wrapper).
        xdc_file: the constraints file relative to the project root.
        jobs: default ``launch_runs -jobs`` (the first ``-tclargs`` argument overrides it).
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    n = names(preset)
    amap = design.address_map(cfg)
    lite, master = design.LITE_INTF, design.MASTER_INTF
    checks = [(lite, "PROTOCOL", "AXI4LITE"), (lite, "DATA_WIDTH", widths[design.LITE_PREFIX + "wdata"]),
              (lite, "ADDR_WIDTH", widths[design.LITE_PREFIX + "awaddr"]),
              (master, "PROTOCOL", "AXI4"), (master, "DATA_WIDTH", widths[design.MASTER_PREFIX + "wdata"]),
              (master, "ADDR_WIDTH", widths[design.MASTER_PREFIX + "awaddr"])]
    clock = f"{cfg.clock_mhz:g}"
    accel, ps, rst, ic = design.ACCEL_CELL, design.PS_CELL, design.RESET_CELL, design.LITE_IC_CELL
    total = len(STEPS)

    def step(name: str) -> str:
        return f'puts "vitforge: step {STEPS.index(name) + 1}/{total}: {name}"'

    segs = " ".join(f"{ps}/SAXIGP2/{s}" for s in amap.master_segments)
    check_rows = "\n".join(f"    {intf} {param} {want}" for intf, param, want in checks)
    first_line = (f"# Generated by vitforge (boards/zcu102/tcl.py) from HwConfig preset {preset!r} "
                  f"(config {axi.config_id(cfg):#010x}): do not edit.")
    return f"""\
{first_line}
# The ZCU102 bitstream of the vitforge accelerator: vivado -mode batch -source build.tcl [-tclargs JOBS]
set vf_name {{{n["name"]}}}
set vf_bd {{{n["bd"]}}}
set vf_root [file dirname [file normalize [info script]]]
set vf_jobs {jobs}
if {{$argc > 0}} {{ set vf_jobs [lindex $argv 0] }}
set vf_proj_dir [file join $vf_root {VIVADO_DIR}]
set vf_reports [file join $vf_root {REPORTS_DIR}]
set vf_products [file join $vf_root {PRODUCTS_DIR}]

# The newest installed item matching a pattern; stops with what is missing.
proc vf_newest {{items what}} {{
    if {{[llength $items] == 0}} {{ error "vitforge: no $what is installed in this Vivado" }}
    return [lindex [lsort -dictionary $items] end]
}}

{step("project")}
create_project $vf_name $vf_proj_dir -part {PART} -force
set vf_board [vf_newest [get_board_parts -quiet -latest_file_version {{{BOARD_PATTERN}}}] \\
    "ZCU102 board part ({BOARD_PATTERN}; Vivado's board files)"]
puts "vitforge: board part $vf_board"
set_property board_part $vf_board [current_project]
add_files -norecurse [list {" ".join(f"[file join $vf_root {f}]" for f in rtl_files)}]
update_compile_order -fileset sources_1

{step("block_design")}
create_bd_design $vf_bd
set vf_ps [create_bd_cell -type ip -vlnv [vf_newest [get_ipdefs -all {{{PS_IP}}}] "Zynq UltraScale+ PS IP"] {ps}]
apply_bd_automation -rule xilinx.com:bd_rule:zynq_ultra_ps_e -config {{apply_board_preset "1"}} $vf_ps
set_property -dict [list \\
    CONFIG.PSU__USE__M_AXI_GP0 {{1}} \\
    CONFIG.PSU__USE__M_AXI_GP1 {{0}} \\
    CONFIG.PSU__USE__M_AXI_GP2 {{0}} \\
    CONFIG.PSU__USE__S_AXI_GP2 {{1}} \\
    CONFIG.PSU__SAXIGP2__DATA_WIDTH {{{cfg.bus_bits}}} \\
    CONFIG.PSU__FPGA_PL0_ENABLE {{1}} \\
    CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ {{{clock}}} \\
    CONFIG.PSU__USE__IRQ0 {{1}} \\
] $vf_ps
set vf_clock [get_property CONFIG.PSU__CRL_APB__PL0_REF_CTRL__ACT_FREQMHZ $vf_ps]
if {{abs($vf_clock - {clock}) > {CLOCK_TOLERANCE} * {clock}}} {{
    error "vitforge: the PS makes pl_clk0 $vf_clock MHz, not the preset's {clock} MHz"
}}
puts "vitforge: pl_clk0 $vf_clock MHz"
set vf_accel [create_bd_cell -type module -reference {design.WRAPPER} {accel}]
foreach {{intf param want}} {{
{check_rows}
}} {{
    set got [get_property CONFIG.$param [get_bd_intf_pins {accel}/$intf]]
    if {{$got ne $want}} {{
        error "vitforge: Vivado inferred $param $got on {accel}/$intf; the accelerator has $want"
    }}
}}
set vf_rst [create_bd_cell -type ip -vlnv [vf_newest [get_ipdefs -all {{{RESET_IP}}}] "Processor System Reset IP"] \\
    {rst}]
set vf_ic [create_bd_cell -type ip -vlnv [vf_newest [get_ipdefs -all {{{SMARTCONNECT_IP}}}] "SmartConnect IP"] {ic}]
set_property -dict [list CONFIG.NUM_SI {{1}} CONFIG.NUM_MI {{1}}] $vf_ic
connect_bd_net [get_bd_pins {ps}/pl_clk0] [get_bd_pins {ps}/maxihpm0_fpd_aclk] [get_bd_pins {ps}/saxihp0_fpd_aclk] \\
    [get_bd_pins {rst}/slowest_sync_clk] [get_bd_pins {ic}/aclk] [get_bd_pins {accel}/{design.CLOCK_PORT}]
connect_bd_net [get_bd_pins {ps}/pl_resetn0] [get_bd_pins {rst}/ext_reset_in]
connect_bd_net [get_bd_pins {rst}/peripheral_reset] [get_bd_pins {accel}/{design.RESET_PORT}]
connect_bd_net [get_bd_pins {rst}/interconnect_aresetn] [get_bd_pins {ic}/aresetn]
connect_bd_intf_net [get_bd_intf_pins {ps}/M_AXI_HPM0_FPD] [get_bd_intf_pins {ic}/S00_AXI]
connect_bd_intf_net [get_bd_intf_pins {ic}/M00_AXI] [get_bd_intf_pins {accel}/{lite}]
connect_bd_intf_net [get_bd_intf_pins {accel}/{master}] [get_bd_intf_pins {ps}/S_AXI_HP0_FPD]
connect_bd_net [get_bd_pins {accel}/{design.IRQ_PORT}] [get_bd_pins {ps}/pl_ps_irq0]

{step("addresses")}
assign_bd_address -offset {amap.reg_base:#010x} -range {size_text(amap.reg_range)} \\
    -target_address_space [get_bd_addr_spaces {ps}/Data] [get_bd_addr_segs {accel}/{lite}/reg0] -force
foreach vf_seg {{{segs}}} {{
    assign_bd_address -target_address_space [get_bd_addr_spaces {accel}/{master}] [get_bd_addr_segs $vf_seg] -force
}}
validate_bd_design
save_bd_design

{step("wrapper")}
set vf_bd_file [get_files $vf_bd.bd]
add_files -norecurse [make_wrapper -files $vf_bd_file -top]
set_property top {n["wrapper"]} [current_fileset]
add_files -fileset constrs_1 -norecurse [file join $vf_root {xdc_file}]
update_compile_order -fileset sources_1

{step("bitstream")}
launch_runs impl_1 -to_step write_bitstream -jobs $vf_jobs
wait_on_run impl_1
foreach vf_run {{synth_1 impl_1}} {{
    if {{[get_property PROGRESS [get_runs $vf_run]] ne "100%"}} {{
        error "vitforge: $vf_run did not complete ([get_property STATUS [get_runs $vf_run]]); see\\
            [file join [get_property DIRECTORY [get_runs $vf_run]] runme.log]"
    }}
}}

{step("reports")}
open_run impl_1
file mkdir $vf_reports
report_utilization -file [file join $vf_reports {UTILIZATION_RPT}]
report_timing_summary -max_paths 10 -file [file join $vf_reports {TIMING_RPT}]
set vf_wns [get_property SLACK [get_timing_paths -max_paths 1 -nworst 1 -setup]]
set vf_period [get_property PERIOD [get_clocks {PS_CLOCK}]]
set vf_out [open [file join $vf_reports {TIMING_TXT}] w]
puts $vf_out "wns_ns $vf_wns"
puts $vf_out "period_ns $vf_period"
close $vf_out

{step("products")}
set vf_bit [file join [get_property DIRECTORY [get_runs impl_1]] {n["wrapper"]}.bit]
if {{![file exists $vf_bit]}} {{ error "vitforge: write_bitstream left no $vf_bit" }}
set vf_hwh {{}}
foreach vf_src {{gen srcs}} {{
    set vf_try [file join $vf_proj_dir $vf_name.$vf_src sources_1 bd $vf_bd hw_handoff $vf_bd.hwh]
    if {{[file exists $vf_try]}} {{ set vf_hwh $vf_try; break }}
}}
if {{$vf_hwh eq {{}}}} {{ error "vitforge: no $vf_bd.hwh under $vf_name.gen or $vf_name.srcs in $vf_proj_dir" }}
file mkdir $vf_products
foreach {{vf_from vf_ext}} [list $vf_bit bit $vf_hwh hwh] {{
    set vf_to [file join $vf_products $vf_name.$vf_ext]
    file copy -force $vf_from $vf_to.tmp
    file rename -force $vf_to.tmp $vf_to
}}
puts "vitforge: wrote [file join $vf_products $vf_name].bit and .hwh"
"""


def xdc(cfg: HwConfig, preset: str) -> str:
    """The constraints file: the clock comes from the PS (``clk_pl_0``, which Vivado constrains at
    the PLL's frequency, checked against ``clock_mhz`` by the script); the accelerator has no
    other clock and no pins, so only the bitstream's properties are set here."""
    return (f"# Generated by vitforge (boards/zcu102/tcl.py) from HwConfig preset {preset!r} "
            f"(config {axi.config_id(cfg):#010x}): do not edit.\n"
            f"# Timing: the only clock is the PS's pl_clk0 (clk_pl_0, {cfg.clock_mhz:g} MHz requested; the PS block\n"
            "# constrains it at the PLL's actual frequency, which build.tcl checks). The accelerator's reset is\n"
            "# synchronous to it (proc_sys_reset) and it has no package pins.\n"
            "set_property BITSTREAM.GENERAL.COMPRESS TRUE [current_design]\n")


__all__ = ["BOARD_PATTERN", "PART", "PRODUCTS_DIR", "REPORTS_DIR", "STEPS", "TIMING_TXT", "UTILIZATION_RPT",
           "VIVADO_DIR", "build_tcl", "names", "size_text", "xdc"]
