"""hw/cycles.py's per-GEMM utilization report: MACs, cycles and the tile-occupancy bound."""

from __future__ import annotations

import dataclasses

import pytest

from vitforge.hw.compiler import Program
from vitforge.hw.config import BASE
from vitforge.hw.cycles import CycleModel, tile_occupancy
from vitforge.hw.isa import Instr, Op

CFG = dataclasses.replace(BASE, pe_rows=4, pe_cols=8, max_embed_dim=64, max_heads=2)


@pytest.mark.parametrize(("m", "n", "expected"), [(4, 8, 1.0), (8, 16, 1.0), (5, 8, 5 / 8), (4, 9, 9 / 16),
                                                  (1, 1, 1 / 32), (0, 8, 0.0)])
def test_tile_occupancy(m, n, expected):
    assert tile_occupancy(CFG, m, n) == pytest.approx(expected)


def _gemm(m, k, n, **flags):
    return Instr(Op.GEMM, a_addr=0, b_addr=0, dst_addr=0, a_stride=1, b_stride=1, dst_stride=1, param_addr=0,
                 m=m, k=k, n=n, **flags)


def test_gemm_layers_merge_one_shape_per_layer():
    instrs = [_gemm(9, 32, 16), _gemm(9, 8, 9, b_act=1, b_trans=1), _gemm(9, 8, 9, b_act=1, b_trans=1),
              _gemm(9, 32, 16), Instr(Op.END)]
    prog = Program(instrs=instrs, blobs={}, loads=[], input_shape=(9, 32), output_rows=9, output_cols=16,
                   layers=["a", "a", "a", "b", "b"])
    model = CycleModel(CFG)
    per_instr = model.program_cycles(prog)["per_instr"]
    rows = model.gemm_layers(prog)
    assert [(r["layer"], r["m"], r["k"], r["n"], r["b_act"], r["count"]) for r in rows] == [
        ("a", 9, 32, 16, False, 1), ("a", 9, 8, 9, True, 2), ("b", 9, 32, 16, False, 1)]
    qk = rows[1]
    assert qk["cycles"] == per_instr[1] + per_instr[2] and qk["macs"] == 2 * 9 * 8 * 9
    assert qk["utilization"] == pytest.approx(qk["macs"] / (qk["cycles"] * CFG.macs))
    assert qk["bound"] == pytest.approx(9 * 9 / (12 * 16))
    assert qk["of_bound"] == pytest.approx(qk["utilization"] / qk["bound"])
    # Operands from the weight scratchpad overlap their reads with the steps: closer to the bound.
    assert rows[0]["of_bound"] > qk["of_bound"]
    assert all(0 < r["of_bound"] <= 1 for r in rows)


def test_op_cycles_count_what_overlapped_loads_leave():
    """Blocking LOADs cost their transfer on the controller's timeline; the same LOADs overlapped
    with a long GEMM leave their issue cycles and nothing else."""
    from vitforge.hw.isa import Mem

    gemm = _gemm(64, 64, 32)
    loads = [Instr(Op.LOAD, mem=Mem.WEIGHT, addr=0, count=100), Instr(Op.LOAD, mem=Mem.PARAM, addr=0, count=4)]
    nowait = [Instr(Op.LOAD, mem=i.mem, addr=i.addr, count=i.count, nowait=1) for i in loads]
    model = CycleModel(CFG)
    out = {}
    for name, instrs in (("blocking", [gemm, *loads, gemm]), ("overlapped", [*nowait, gemm, Instr(Op.SYNC), gemm])):
        prog = Program(instrs=[*instrs, Instr(Op.END)], blobs={}, loads=[], input_shape=(1, 1), output_rows=1,
                       output_cols=1)
        out[name] = model.op_cycles(prog)
    assert out["blocking"]["load_transfer"] == out["overlapped"]["load_transfer"] == 104
    assert out["blocking"]["per_op"]["LOAD"] == 104 + 2 * 4
    assert out["overlapped"]["per_op"]["LOAD"] + out["overlapped"]["per_op"]["SYNC"] == 3 * 3
    assert out["blocking"]["total"] - out["overlapped"]["total"] == 104 + 2 * 4 - 3 * 3


def test_layernorm_at_unit_lanes_overlaps_rows():
    """At unit_lanes > 1 a LAYERNORM row costs its load pass in the steady state (rows of 384 and 192 at
    8 lanes), or half a divider's round trip when rows are shorter (two dividers taking rows in turn);
    at unit_lanes = 1 a row still waits for the one before it to leave."""
    from vitforge.hw.config import get_preset
    from vitforge.hw.divider import Divider
    from vitforge.hw.nonlinear import LN_PIPE_COPIES, LayerNormUnit
    from vitforge.hw.timing import buffering_cycles, layernorm_out_pass, layernorm_pipeline_cycles
    from vitforge.quant.nonlinear import LN_RECIP_BITS

    cfg = get_preset("zcu102")
    assert cfg.unit_lanes == 8
    model = CycleModel(cfg)

    def ln(rows: int, cols: int, c=cfg) -> int:
        return CycleModel(c).instr_cycles(Instr(Op.LAYERNORM, rows=rows, cols=cols), 0)

    for cols in (384, 192):
        assert ln(20, cols) - ln(19, cols) == cols // cfg.unit_lanes
    div_round = Divider.latency_for(LN_RECIP_BITS + 1) + 1  # a divider takes its next row a cycle after
    assert ln(21, 16) - ln(19, 16) == div_round * 2 // LN_PIPE_COPIES
    pipe = LayerNormUnit.pipeline_for(cfg.numerics, cfg.max_embed_dim)
    assert ln(197, 384) == layernorm_pipeline_cycles(cfg, 197, 384, **pipe)
    assert model.instr_cycles(Instr(Op.LAYERNORM, rows=197, cols=384), 0) < 197 * 60
    one = dataclasses.replace(cfg, unit_lanes=1)
    want = buffering_cycles(one, 3, 384, LayerNormUnit.latency_for(one.numerics, one.max_embed_dim, 384),
                            layernorm_out_pass(one, 384))
    assert ln(3, 384, one) == want
