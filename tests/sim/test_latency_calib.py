# amaranth: UnusedElaboratable=no
"""hw/cycles.py's cycle model against the RTL's own cycle count, per instruction.

The default tier runs small shapes (sim/latency_calib.SMALL_CASES: blocks with and without a
selector, 2x8 and 8x4 PE arrays, a whole two-block model; LANES_CASES: the same kinds at
unit_lanes 2, 4 and 8; FUSED_GELU_CASES: with the GELU fused into the GEMM drain; CACHE_CASES: the
attention GEMMs' operand cache too small and absent; the others run with BASE's, which holds their
operands) in the Amaranth simulator and asserts
exact per-instruction agreement (and so per-layer error 0, well inside the 5% budget). With
``VITFORGE_DEEP=1`` the demo model's shapes (DEMO_CASES: full 65-token blocks and the whole demo
model) run on Verilator.
"""

from __future__ import annotations

import pytest

from vitforge.hw import timing
from vitforge.hw.config import get_preset
from vitforge.hw.cycles import CycleModel
from vitforge.hw.isa import PER_TOKEN, TOKENS, Instr, Mem, Op
from vitforge.hw.timing import port_timing
from vitforge.sim.latency_calib import (
    CACHE_CASES,
    DEMO_CASES,
    FUSED_GELU_CASES,
    LANES_CASES,
    SMALL_CASES,
    Case,
    calibrate,
)

#: The task's budget for a layer's modeled cycles against the RTL's.
LAYER_TOLERANCE = 0.05


def _check(result: dict) -> None:
    assert not result["mismatches"], f"{result['case']}: model != RTL for {result['mismatches'][:5]}"
    for layer, row in result["per_layer"].items():
        assert abs(row["error"]) <= LAYER_TOLERANCE, f"{result['case']} {layer}: {row}"
    model, rtl = result["total"]
    assert model == rtl


@pytest.mark.parametrize("case", SMALL_CASES, ids=[c.name for c in SMALL_CASES])
def test_model_equals_amaranth_rtl(case):
    _check(calibrate(case, "amaranth"))


@pytest.mark.parametrize("case", LANES_CASES, ids=[c.name for c in LANES_CASES])
def test_model_equals_amaranth_rtl_at_unit_lanes(case):
    assert case.config().unit_lanes > 1
    _check(calibrate(case, "amaranth"))


@pytest.mark.parametrize("case", FUSED_GELU_CASES, ids=[c.name for c in FUSED_GELU_CASES])
def test_model_equals_amaranth_rtl_with_fused_gelu(case):
    cfg = case.config()
    assert cfg.fuse_gelu
    program = case.build()[1]
    assert any(i.op == Op.GEMM and i.gelu for i in program.instrs)
    _check(calibrate(case, "amaranth"))


def _b_act_gemms(cfg, program, tokens: int) -> list[tuple[int, int, int]]:
    return [(timing.dim(i.m, tokens), timing.dim(i.k, tokens), timing.dim(i.n, tokens))
            for i in program.instrs if i.op == Op.GEMM and i.b_act]


def _cached(cfg, program, tokens: int) -> set:
    """The operands the program's ``b_act`` GEMMs read from the operand cache, over their tiles past the first."""
    used = set()
    for m, k, n in _b_act_gemms(cfg, program, tokens):
        tiles = [(mt, nt) for mt in range(-(-m // cfg.pe_rows)) for nt in range(cfg.row_words(n))][1:]
        used |= {timing.cached_operand(cfg, k, n, mt, nt) for mt, nt in tiles}
    return used


def test_cases_read_attention_operands_from_the_cache():
    """SMALL_CASES' attention GEMMs read B (after the first M tile) and A (after an M tile's first N tile)
    from BASE's operand cache, which holds them all: the RTL agreement above covers those schedules."""
    for case in SMALL_CASES:
        cfg, program = case.build()[:2]
        assert None not in _cached(cfg, program, case.n_tokens), case.name
    assert set().union(*(_cached(*c.build()[:2], c.n_tokens) for c in SMALL_CASES)) == {"a", "b"}


@pytest.mark.parametrize("case", CACHE_CASES, ids=[c.name for c in CACHE_CASES])
def test_model_equals_amaranth_rtl_at_operand_cache_sizes(case):
    cfg, program = case.build()[:2]
    assert _cached(cfg, program, case.n_tokens) == ({"a", "b", None} if cfg.operand_cache_words else {None})
    _check(calibrate(case, "amaranth"))


@pytest.mark.slow
@pytest.mark.rtl
@pytest.mark.parametrize("case", DEMO_CASES, ids=[c.name for c in DEMO_CASES])
def test_model_equals_verilator_on_demo_shapes(case):
    _check(calibrate(case, "verilator"))


#: SELECT and ADD at unit_lanes > 1 beyond LANES_CASES: a pruning selector (the package token) with one
#: transfer per word (U = lanes) and with four (U = 2 on 8 lanes).
SELECT_LANES_CASES = (
    Case("u8-pe2x8-d32-h2-n9-sel-mixed", dim=32, heads=2, mlp=32, n_tokens=9, pe=(2, 8), unit_lanes=8, seed=3),
    Case("u2-pe2x8-d32-h2-n7-sel-mixed", dim=32, heads=2, mlp=32, n_tokens=7, pe=(2, 8), unit_lanes=2, seed=4),
)


@pytest.mark.parametrize("case", SELECT_LANES_CASES, ids=[c.name for c in SELECT_LANES_CASES])
def test_model_equals_amaranth_rtl_on_select_at_unit_lanes(case):
    cfg, prog, _, pruned = case.build()
    assert cfg.unit_lanes > 1 and any(pruned), "the case must prune a token (the package token's pass)"
    assert any(ins.op == Op.ADD for ins in prog.instrs)
    _check(calibrate(case, "amaranth"))


def test_dynamic_sizes_resolve_to_the_token_count():
    model = CycleModel(get_preset("demo"))
    gemm = dict(a_addr=0, b_addr=0, dst_addr=0, a_stride=1, b_stride=1, dst_stride=1, param_addr=0, k=16, n=16)
    assert model.instr_cycles(Instr(Op.GEMM, m=TOKENS, **gemm), 9) == model.instr_cycles(Instr(Op.GEMM, m=9, **gemm), 0)
    add = Instr(Op.ADD, count=PER_TOKEN | 4)
    assert model.instr_cycles(add, 10) == model.instr_cycles(Instr(Op.ADD, count=40), 0)
    assert timing.gemm_cycles(model.cfg, 9, 16, 16, mean=True) > timing.gemm_cycles(model.cfg, 9, 16, 16)


def test_axi_port_counts_beats():
    cfg = get_preset("zcu102")
    stream, axi = CycleModel(cfg, "stream"), CycleModel(cfg, "axi")
    load = Instr(Op.LOAD, mem=Mem.PARAM, count=10)
    beats = cfg.beats(cfg.param_word_bits)
    assert beats > 1
    assert axi.instr_cycles(load, 0) - port_timing("axi").load_overhead == 10 * beats
    assert stream.instr_cycles(load, 0) == 10 + port_timing("stream").load_overhead
    with pytest.raises(ValueError, match="port must be one of stream, axi, not 'pcie'"):
        CycleModel(cfg, "pcie")


def test_select_counts_must_match_the_program():
    case = SMALL_CASES[0]
    cfg, prog, _, _ = case.build()
    model = CycleModel(cfg)
    with pytest.raises(ValueError, match="1 SELECT instruction"):
        model.program_cycles(prog, [])
    with pytest.raises(ValueError, match="cannot leave 99"):
        model.program_cycles(prog, [99])
