"""`vitforge rtl report`: hierarchy roll-up, block split, device fit (cheap) and the demo synthesis (deep).

Synthesis of the demo preset takes minutes on the CI machines (more than the 60 s budget of
the default tier): it runs with ``VITFORGE_DEEP=1``. Everything else works on hand-made
``stat`` data or on the Verilog of a small config.
"""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from vitforge.cli import main
from vitforge.hw import synth
from vitforge.hw.config import BASE, GELU_DSPS_PER_LANE
from vitforge.hw.gemm import GemmEngine, GemmSequencer
from vitforge.hw.synth import (
    DEVICES,
    RESOURCES,
    TOP,
    block_of,
    block_paths,
    canonical,
    children,
    describe_fit,
    device_fit,
    expected_blocks,
    module_cells,
    module_report,
    module_report_without,
    overhead,
    per_block,
    rollup,
    split_modules,
    strip_zero_init,
    stub,
    summarize,
    synth_modules,
    synth_script,
)

#: A config small enough to convert to Verilog in a few seconds, with every unit built.
SMALL = dataclasses.replace(BASE, max_tokens=8, max_embed_dim=16, max_mlp_dim=16, max_heads=1, act_depth=1024,
                            weight_depth=256, param_depth=16, imem_depth=16)


def _stat(modules: dict[str, dict[str, int]]) -> dict:
    """A ``stat -json`` document as Yosys writes it (escaped names, ``$scopeinfo`` cells)."""
    def esc(name):
        return name if name.startswith(("$", "LUT", "FD", "DSP", "RAM", "CARRY", "MUXF", "INV")) else "\\" + name

    return {"creator": "Yosys", "modules": {
        esc(m): {"num_cells": sum(c.values()),
                 "num_cells_by_type": {**{esc(k): v for k, v in c.items()}, "$scopeinfo": 3}}
        for m, c in modules.items()}}


#: encoder_top -> ctrl -> {gemm -> engine -> requant, 2 x a shared divider, residual}.
HIER = module_cells(_stat({
    "encoder_top": {"encoder_top.ctrl": 1, "RAMB36E2": 4, "FDRE": 10},
    "encoder_top.ctrl": {"encoder_top.ctrl.gemm": 1, "encoder_top.ctrl.residual": 1, "LUT6": 7, "FDRE": 1},
    "encoder_top.ctrl.gemm": {"encoder_top.ctrl.gemm.engine": 1, "div": 2, "LUT3": 5},
    "encoder_top.ctrl.gemm.engine": {"encoder_top.ctrl.gemm.engine.requant": 1, "DSP48E2": 16, "FDRE": 100},
    "encoder_top.ctrl.gemm.engine.requant": {"DSP48E2": 4, "LUT2": 9},
    "encoder_top.ctrl.residual": {"LUT4": 8, "RAMB18E2": 1},
    "div": {"LUT6": 20, "FDSE": 2},
}))


def test_script_avoids_abc9_and_keeps_hierarchy():
    script = synth_script("x")
    assert "abc9" not in script.replace("-run begin:map_luts", "")
    assert "-run begin:map_luts" in script and "abc -luts" in script
    assert "-flatten" not in script and "-top x" in script


@pytest.mark.parametrize(("cells", "expect"), [
    ({"LUT6": 3, "LUT2": 1, "FDRE": 5, "DSP48E2": 7, "RAMB36E2": 1, "RAMB18E2": 3},
     {"dsp": 7, "lut": 4, "ff": 5, "bram36": 2.5}),
    ({"INV": 2, "RAM64M": 1, "RAM32M16": 1, "RAM64X1D": 3}, {"dsp": 0, "lut": 2 + 4 + 8 + 6, "ff": 0, "bram36": 0}),
    ({"FDSE": 1, "FDCE": 2, "FDPE": 3, "CARRY8": 9, "MUXF7": 4, "RAMB18E2": 1},
     {"dsp": 0, "lut": 0, "ff": 6, "bram36": 0.5}),
])
def test_summarize_counts_cells(cells, expect):
    assert summarize(cells) == expect


def test_module_cells_unescapes_and_drops_scopeinfo():
    assert HIER["encoder_top.ctrl"] == {"encoder_top.ctrl.gemm": 1, "encoder_top.ctrl.residual": 1, "LUT6": 7,
                                        "FDRE": 1}


def test_rollup_multiplies_by_instance_count():
    total = rollup(HIER, "encoder_top")
    assert total == {"RAMB36E2": 4, "FDRE": 111, "LUT6": 7 + 2 * 20, "LUT3": 5, "DSP48E2": 20, "LUT2": 9,
                     "LUT4": 8, "RAMB18E2": 1, "FDSE": 4}
    assert rollup(HIER, "div") == {"LUT6": 20, "FDSE": 2}


@pytest.mark.parametrize(("module", "block"), [
    ("encoder_top", "controller_and_memories"),
    ("encoder_top.ctrl", "controller_and_memories"),
    ("encoder_top.ctrl.gemm", "gemm_sequencer"),
    ("encoder_top.ctrl.gemm.recip_div", "gemm_sequencer"),
    ("encoder_top.ctrl.gemm.engine", "gemm_array"),
    ("encoder_top.ctrl.gemm.engine.requant", "requant"),
    ("encoder_top.ctrl.gemmx", "controller_and_memories"),  # a prefix of the name, not of the path
    ("encoder_top.ctrl.softmax.exp.poly", "softmax"),
    ("encoder_top.ctrl.selector.fuse.div", "selector"),
])
def test_block_of_takes_the_longest_path(module, block):
    assert block_of(module) == block


def test_per_block_splits_the_rollup():
    blocks = per_block(HIER, "encoder_top", expect=["gemm_array", "requant", "gemm_sequencer", "residual",
                                                    "controller_and_memories"])
    assert blocks == {
        "gemm_array": {"dsp": 16, "lut": 0, "ff": 100, "bram36": 0},
        "requant": {"dsp": 4, "lut": 9, "ff": 0, "bram36": 0},
        # the sequencer's own LUT3s plus two instances of a module outside the path naming ("div")
        "gemm_sequencer": {"dsp": 0, "lut": 5 + 2 * 20, "ff": 4, "bram36": 0},
        "residual": {"dsp": 0, "lut": 8, "ff": 0, "bram36": 0.5},
        "controller_and_memories": {"dsp": 0, "lut": 7, "ff": 11, "bram36": 4},
    }
    total = summarize(rollup(HIER, "encoder_top"))
    for r in RESOURCES:
        assert sum(b[r] for b in blocks.values()) == total[r]


def test_per_block_refuses_a_missing_block():
    with pytest.raises(ValueError, match=r"block 'gelu' \(encoder_top.ctrl.gelu\) is not in the synthesized"):
        per_block(HIER, "encoder_top", expect=["gemm_array", "gelu"])


def test_expected_blocks_follow_the_config():
    # every block of the report: the base config builds all of them but the fused GELU lanes
    assert expected_blocks(dataclasses.replace(BASE, fuse_gelu=True)) == list(block_paths())
    assert expected_blocks(BASE) == [b for b in block_paths() if b != "gemm_gelu"]
    without = expected_blocks(dataclasses.replace(BASE, selector=False, gelu=False))
    assert "selector" not in without and "gelu" not in without and "softmax" in without


@pytest.fixture(scope="module")
def small_verilog() -> dict[str, str]:
    """Verilog of SMALL's encoder_top, with and without the token selector."""
    from vitforge.hw.top import EncoderTop
    from vitforge.hw.verilog import generate

    return {sel: generate(EncoderTop(config=dataclasses.replace(SMALL, selector=sel)), TOP) for sel in (True, False)}


def test_generated_module_names_map_to_every_block(small_verilog):
    """Amaranth names modules by instance path; the paths of block_paths() must exist in the Verilog."""
    names = list(split_modules(small_verilog[True]))
    assert len(names) == len(re.findall(r"^module ", small_verilog[True], re.M))
    found = {block_of(name) for name in names}
    assert set(expected_blocks(SMALL)) <= found
    # every module is emitted once per instance (no shared definitions to multiply)
    assert len(names) == len(set(names)) and all(n == TOP or n.startswith(TOP + ".") for n in names)


def test_module_names_map_to_every_block_with_the_fused_gelu_lanes():
    """The fused GELU lanes (``fuse_gelu``) are their own block; their module path must be the unit's."""
    from vitforge.hw.top import EncoderTop
    from vitforge.hw.verilog import generate

    cfg = dataclasses.replace(SMALL, fuse_gelu=True)
    names = list(split_modules(generate(EncoderTop(config=cfg), TOP)))
    assert "gemm_gelu" in expected_blocks(cfg)
    assert set(expected_blocks(cfg)) <= {block_of(name) for name in names}


def test_children_and_stub(small_verilog):
    modules = split_modules(small_verilog[True])
    kids = children(modules)
    assert kids[TOP] == {f"{TOP}.ctrl"}
    assert kids[f"{TOP}.ctrl.gemm"] == {f"{TOP}.ctrl.gemm.engine", f"{TOP}.ctrl.gemm.recip_div"}
    assert kids[f"{TOP}.ctrl.gemm.engine.requant"] == set()
    engine = stub(modules[f"{TOP}.ctrl.gemm.engine"])
    assert engine.startswith("(* blackbox *)\nmodule \\encoder_top.ctrl.gemm.engine (")
    assert "input clk;" in engine and "output result__valid;" in engine and "always" not in engine
    assert engine.endswith("endmodule\n") and engine.count(";") == 1 + engine.count("input") + engine.count("output")


def test_synth_modules_reruns_only_what_changed(small_verilog, tmp_path, monkeypatch):
    """Without the selector, only the modules whose text changed and the modules above them run again."""
    runs = []

    def fake_yosys(modules, todo, kids, top, script):
        runs.append(set(todo))
        return {name: {"LUT6": len(modules[name])} for name in todo}

    monkeypatch.setattr(synth, "_CACHE", tmp_path)
    monkeypatch.setattr(synth, "_run_yosys", fake_yosys)
    monkeypatch.setattr(synth, "yosys_version", lambda: "Yosys test")
    with_sel, without = (split_modules(strip_zero_init(small_verilog[sel])) for sel in (True, False))
    full = synth_modules(small_verilog[True])
    assert runs == [set(with_sel)] and full[TOP] == {"LUT6": len(with_sel[TOP])}
    assert synth_modules(small_verilog[True]) == full and len(runs) == 1  # all cached
    synth_modules(small_verilog[False])
    assert TOP in runs[1] and f"{TOP}.ctrl" in runs[1]
    assert not any(name.startswith(f"{TOP}.ctrl.gemm") for name in runs[1])
    assert not any("selector" in name for name in without)
    changed = {name for name, text in without.items() if canonical(with_sel.get(name, "")) != canonical(text)}
    assert changed <= runs[1]


def test_canonical_renames_generated_names():
    a = "module \\m (\\port$518$0 , x);\n  reg \\$auto$verilog_backend.cc:2355:dump_module$18  = 0;\n  wire \\$4 ;\n"
    b = "module \\m (\\port$506$0 , x);\n  reg \\$auto$verilog_backend.cc:2355:dump_module$14  = 0;\n  wire \\$4 ;\n"
    assert a != b and canonical(a) == canonical(b)
    # numbers shared by two names in one design and not in the other (Amaranth numbers design-wide)
    assert canonical(a.replace("\\$4 ", "\\$518 ")) == canonical(a)
    assert canonical(a.replace("\\$4 ", "\\port$518$0 ")) != canonical(a)  # two names merged into one
    assert canonical(a.replace(" x)", " y)")) != canonical(a)  # plain names stay


def test_strip_zero_init_keeps_roms():
    verilog = ("  reg [7:0] mem [2:0];\n  initial begin\n    mem[0] = 8'h00;\n    mem[1] = 8'h00;\n"
               "    mem[2] = 8'h00;\n  end\n  reg [15:0] rom [1:0];\n  initial begin\n    rom[0] = 16'h0000;\n"
               "    rom[1] = 16'h1000;\n  end\n  reg [31:0] \\a.b [1:0];\n  initial begin\n    \\a.b [0] = 32'd0;\n"
               "    \\a.b [1] = 32'd0;\n  end\n")
    stripped = strip_zero_init(verilog)
    assert "mem[0]" not in stripped and "\\a.b [0]" not in stripped
    assert "rom[1] = 16'h1000;" in stripped and stripped.count("initial begin") == 1


def test_device_fit_names_what_overflows():
    cap = DEVICES["xczu9eg"]
    fit = device_fit({"dsp": cap["dsp"], "lut": cap["lut"] // 2, "ff": 0, "bram36": 1}, "xczu9eg")
    assert fit["fits"] and fit["over"] == {} and fit["utilization_pct"]["dsp"] == 100.0
    assert fit["utilization_pct"]["lut"] == 50.0 and describe_fit(fit) == "fits xczu9eg"
    fit = device_fit({"dsp": cap["dsp"] + 120, "lut": 1, "ff": 1, "bram36": cap["bram36"] + 1}, "xczu9eg")
    assert not fit["fits"] and fit["over"] == {"dsp": 120, "bram36": 1}
    text = describe_fit(fit)
    assert text.startswith("does not fit xczu9eg: dsp +120") and "bram36 +1" in text and "lut" not in text
    with pytest.raises(ValueError, match="unknown device 'xc7z020'"):
        device_fit(fit["capacity"], "xc7z020")


def test_overhead_is_relative_to_the_design_without():
    over = overhead({"dsp": 110, "lut": 105, "ff": 100, "bram36": 0}, {"dsp": 100, "lut": 100, "ff": 100, "bram36": 0})
    assert over["dsp"] == {"with": 110, "without": 100, "delta": 10, "pct": 10.0}
    assert over["lut"]["pct"] == 5.0 and over["ff"]["delta"] == 0 and over["bram36"]["pct"] is None


@pytest.mark.slow  # three Yosys runs, about 30 s of CPU with an empty cache: VITFORGE_DEEP=1
def test_dsp_packing_halves_the_array_dsps():
    """Yosys maps each packed multiplication to one DSP48E2: a 2x2 array takes 2 DSPs instead of 4,
    and the engine's DSPs are ``dsp_estimate`` (requantizer included) with and without packing, and
    with the fused GELU lanes (``fuse_gelu``).

    LUT bound with packing: per row pair one packing adder (``act_bits`` LUTs and an inverter),
    per packed product one inverter (the borrow's carry-in); the accumulators stay as they were.
    (tests/hw/test_gemm_packing.py checks the multiplications' widths in the default tier.)
    """
    cfg = dataclasses.replace(SMALL, pe_rows=2, pe_cols=2, max_embed_dim=8)
    configs = [dataclasses.replace(cfg, dsp_packing=p) for p in (False, True)]
    reports = [module_report(GemmEngine(config=c), "gemm_engine") for c in configs]
    assert [r["dsp"] for r in reports] == [c.dsp_estimate for c in configs]  # the engine with its requantizer
    plain, packed = (r["own"] for r in reports)
    packed_total = reports[1]["dsp"]
    assert plain["dsp"] == cfg.macs and packed["dsp"] == cfg.macs // 2
    pairs = cfg.pe_rows // 2
    assert plain["lut"] <= packed["lut"] <= plain["lut"] + pairs * (cfg.act_bits + 1) + cfg.macs // 2
    assert packed["ff"] == plain["ff"]
    # The fused GELU lanes (fuse_gelu) are in the engine and in dsp_estimate; the PE array is unchanged.
    fused_cfg = dataclasses.replace(cfg, dsp_packing=True, fuse_gelu=True)
    fused = module_report(GemmEngine(config=fused_cfg), "gemm_engine")
    assert fused["dsp"] == fused_cfg.dsp_estimate == packed_total + GELU_DSPS_PER_LANE * cfg.lanes
    assert fused["own"]["dsp"] == packed["dsp"]


def test_module_report_without_names_a_missing_module():
    with pytest.raises(ValueError, match=r"gemm_sequencer has no module 'gemm_sequencer.nope'; its modules: .*engine"):
        module_report_without(GemmSequencer(config=SMALL), "gemm_sequencer", "gemm_sequencer.nope")


@pytest.mark.slow  # two Yosys runs of the sequencer, about a minute of CPU: VITFORGE_DEEP=1
def test_operand_cache_maps_to_block_ram():
    """The GEMM sequencer's operand cache (1,024 words of 32 bits) is one RAMB36, not LUTs or FFs;
    without it the sequencer has no block RAM. The engine is left out (a blackbox)."""
    builds = [GemmSequencer(config=dataclasses.replace(SMALL, operand_cache_words=c)) for c in (1024, 0)]
    with_cache, without = (module_report_without(b, "gemm_sequencer", "gemm_sequencer.engine") for b in builds)
    assert with_cache["left_out"][0] == "gemm_sequencer.engine"
    assert (with_cache["bram36"], without["bram36"]) == (1, 0)
    assert with_cache["dsp"] == without["dsp"] == 0
    assert with_cache["ff"] - without["ff"] < 100  # counters and flags; the words are in the RAMB36


@pytest.mark.slow  # demo synthesis takes minutes: VITFORGE_DEEP=1
def test_report_demo(capsys):
    assert main(["rtl", "report", "--preset", "demo", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["method"] == "hierarchical"
    assert list(result["per_block"]) == list(block_paths())
    for r in RESOURCES:
        assert sum(b[r] for b in result["per_block"].values()) == result[r]
    assert result["dsp"] > 0 and result["lut"] > 0 and result["ff"] > 0 and result["bram36"] > 0
    assert result["per_block"]["gemm_array"]["dsp"] > 0 and result["per_block"]["controller_and_memories"]["bram36"] > 0
    assert result["device"]["name"] == "xczu9eg" and result["device"]["fits"]
