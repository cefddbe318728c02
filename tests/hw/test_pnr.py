"""hw/pnr.py: place and route on an ECP5-85F (ULX3S) with the YoWASP tools, through Amaranth's platform build.

The default tier builds a tiny multiply-accumulate core through the same code path as ``rtl pnr``
(scan-chain wrapper, the retimed ULX3S platform, yosys/nextpnr/ecppack, nextpnr's JSON report); the
demo preset's whole core is the slow tier. The first YoWASP run compiles its tools (about 2 minutes,
cached in ~/.cache/YoWASP).
"""

# No `from __future__ import annotations`: Amaranth reads the component's port annotations.
import json

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from vitforge.cli import main
from vitforge.hw.config import get_preset
from vitforge.hw.pnr import CELL_TYPES, board_platform, parse_report, place_and_route

DEMO = get_preset("demo")
A_BITS, ACC_BITS = 8, 24


class Mac(wiring.Component):
    """acc += a * b (signed), registered."""

    a: In(A_BITS)
    b: In(A_BITS)
    acc: Out(ACC_BITS)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.acc.eq(self.acc + self.a.as_signed() * self.b.as_signed())
        return m


def test_board_clock_is_constrained_at_the_preset_clock():
    plat = board_platform(DEMO.clock_mhz * 1e6)
    clk = next(r for r in plat.resources.values() if r.name == plat.default_clk)
    assert clk.clock.frequency == DEMO.clock_mhz * 1e6
    base = next(r for r in type(plat).__mro__[1].resources if r.name == plat.default_clk)
    assert base.ios == clk.ios and base.clock.frequency != clk.clock.frequency  # the same pin, retimed


def test_parse_report():
    seg = {"delay": 1.5, "from": {"cell": "a_ff"}, "to": {"cell": "mid"}}
    report = {"fmax": {"$glbnet$clk": {"achieved": 87.654, "constraint": 100}},
              "critical_paths": [{"path": [seg, {"delay": 2.25, "from": {"cell": "mid"}, "to": {"cell": "b_ff"}}]}],
              "utilization": {cell: {"used": i, "available": 100 + i} for i, cell in enumerate(CELL_TYPES.values())}}
    fmax, constraint, crit, util = parse_report(report)
    assert (fmax, constraint) == (87.65, 100.0)
    assert crit == {"from": "a_ff", "to": "b_ff", "delay_ns": 3.75}
    assert util == {name: {"used": i, "available": 100 + i} for i, name in enumerate(CELL_TYPES)}
    with pytest.raises(ValueError, match="no fmax"):
        parse_report({"fmax": {}})


def test_place_and_route_a_small_core(tmp_path):
    res = place_and_route(Mac(), DEMO, tmp_path, name="mac", log=lambda s: None)
    assert res.target_mhz == DEMO.clock_mhz
    assert res.fmax_mhz > 0
    assert res.critical_path["from"] and res.critical_path["to"] and res.critical_path["delay_ns"] > 0
    assert res.utilization["mult18"]["used"] >= 1  # the 8x8 multiply is a MULT18X18D
    assert res.utilization["ff"]["used"] >= ACC_BITS + 2 * A_BITS + ACC_BITS  # core, input chain, output chain
    assert res.utilization["io"]["used"] == 4  # clock, scan in, scan shift, scan out
    assert (tmp_path / "mac.bit").stat().st_size > 100_000  # an LFE5U-85F bitstream


@pytest.mark.slow
def test_rtl_pnr_demo_core(capsys, tmp_path):
    assert main(["rtl", "pnr", "--preset", "demo", "--family", "ecp5", "--json", "--out", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fmax_mhz"] > 0 and out["target_mhz"] == DEMO.clock_mhz
    assert out["utilization"]["mult18"]["used"] > 0 and out["utilization"]["lut4"]["used"] > 1000
    assert out["critical_path"]["from"] and out["bitstream"].endswith(".bit")
