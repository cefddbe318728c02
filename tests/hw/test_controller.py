# amaranth: UnusedElaboratable=no
# (refused components are created and never elaborated; Amaranth would warn about them at exit)
"""Controller + top in the Amaranth simulator: a tiny encoder block (behind a token selector)
compiled by hw/compiler.py (inputs through the LOAD table) vs the pure-quant reference, bit for
bit; error stop; bad configs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vitforge.hw.compiler import INPUT_BLOB, Load, Program
from vitforge.hw.config import BASE, HwConfig
from vitforge.hw.controller import Controller
from vitforge.hw.cycles import CycleModel
from vitforge.hw.isa import Instr, Mem, Op
from vitforge.quant.ops import residual_add
from vitforge.sim.amsim import run_encoder_top
from vitforge.sim.benches import reference as block_ref
from vitforge.sim.latency_calib import profile_program
from vitforge.sim.scoreboard import assert_equal

#: Tiny block: D=16, 2 heads of 8, MLP 32, up to 6 tokens.
TINY = dataclasses.replace(BASE, act_depth=4096, weight_depth=1024, param_depth=64, imem_depth=128,
                           max_tokens=6, max_embed_dim=16, max_mlp_dim=32, max_heads=2)


def run_top(cfg: HwConfig, prog, x: torch.Tensor, max_cycles: int = 400_000) -> dict:
    """Run ``prog`` with ``x`` as its input blob; fails unless it finished and took every DMA word."""
    out = run_encoder_top(cfg, prog, {INPUT_BLOB: block_ref.pack_matrix(cfg, x)}, max_cycles)
    assert out["done"], f"the program did not finish in {max_cycles} cycles"
    return out


@pytest.mark.parametrize("keep", ["mixed", "all", "class_only", "no_selector"])
def test_tiny_block_matches_reference(keep):
    cfg, n = TINY, 5
    x = torch.randint(-128, 128, (n, cfg.max_embed_dim), generator=torch.Generator().manual_seed(4))
    selector = keep != "no_selector"
    p = block_ref.make_block_case(x, dim=16, heads=2, mlp=32, selector=selector, seed=7,
                                  keep=keep, num=cfg.numerics)
    expected, kept = block_ref.reference(x, p, cfg.numerics)
    if selector:
        n_kept = int(kept.sum())
        assert {"all": n_kept == n, "class_only": n_kept == 1, "mixed": 1 < n_kept < n}[keep], n_kept
    prog = block_ref.block_program(cfg, p, n)
    out = run_top(cfg, prog, x)
    assert not out["error"]
    assert out["dma_left"] == 0
    rows = expected.shape[0]
    if selector:
        assert out["tokens"] == rows
    got = block_ref.unpack_matrix(cfg, out["stored"], len(out["stored"]) // cfg.row_words(16), 16)
    assert_equal(got, expected, f"tiny block ({keep})")
    assert out["cycles"] > 0


#: head_dim = lanes (DeiT's 64 on zcu102, here 8): the selector's global half starts mid-word.
HEAD_LANES = dataclasses.replace(TINY, pe_cols=8)


@pytest.mark.parametrize("keep", ["mixed", "all"])
def test_selector_with_head_dim_equal_to_lanes_matches_reference(keep):
    cfg, n = HEAD_LANES, 6
    x = torch.randint(-128, 128, (n, cfg.max_embed_dim), generator=torch.Generator().manual_seed(5))
    p = block_ref.make_block_case(x, dim=16, heads=2, mlp=32, selector=True, seed=8, keep=keep, num=cfg.numerics)
    assert 16 // 2 == cfg.lanes
    expected, kept = block_ref.reference(x, p, cfg.numerics)
    n_kept = int(kept.sum())
    assert (1 < n_kept < n) if keep == "mixed" else n_kept == n, n_kept
    out = run_top(cfg, block_ref.block_program(cfg, p, n), x)
    assert not out["error"] and out["dma_left"] == 0
    assert out["tokens"] == expected.shape[0]
    got = block_ref.unpack_matrix(cfg, out["stored"], len(out["stored"]) // cfg.row_words(16), 16)
    assert_equal(got, expected, f"selector with head_dim = lanes ({keep})")


@pytest.mark.parametrize(("pe_cols", "unit_lanes", "keep"),
                         [(4, 2, "mixed"), (4, 4, "no_selector"), (8, 4, "mixed"), (8, 8, "mixed"), (8, 2, "all")])
def test_tiny_block_at_unit_lanes_matches_reference(pe_cols, unit_lanes, keep):
    """The row-wise units at unit_lanes > 1 (rows of 5 tokens and 16 or 32 channels: softmax rows are
    not a multiple of the lanes), the pipelined row streamer, the packing writer and SELECT's
    unit_lanes-wide compactor (one transfer per word at U = lanes, four at U = 2 on 8 lanes), bit for bit."""
    cfg, n = dataclasses.replace(TINY, pe_cols=pe_cols, unit_lanes=unit_lanes), 5
    x = torch.randint(-128, 128, (n, cfg.max_embed_dim), generator=torch.Generator().manual_seed(6))
    selector = keep != "no_selector"
    p = block_ref.make_block_case(x, dim=16, heads=2, mlp=32, selector=selector, seed=9, keep=keep,
                                  num=cfg.numerics)
    expected, _ = block_ref.reference(x, p, cfg.numerics)
    out = run_top(cfg, block_ref.block_program(cfg, p, n), x)
    assert not out["error"] and out["dma_left"] == 0
    got = block_ref.unpack_matrix(cfg, out["stored"], len(out["stored"]) // cfg.row_words(16), 16)
    assert_equal(got, expected, f"tiny block at unit_lanes={unit_lanes} on {pe_cols} lanes ({keep})")
    one = run_top(dataclasses.replace(cfg, unit_lanes=1), block_ref.block_program(cfg, p, n), x)
    assert out["cycles"] < one["cycles"], (out["cycles"], one["cycles"])


@pytest.mark.parametrize("unit_lanes", [1, 2, 4])
@pytest.mark.parametrize(("words", "dst"), [(1, "a"), (6, "a"), (6, "b"), (5, "apart")])
def test_add_matches_reference_and_model(unit_lanes, words, dst):
    """ADD alone (one word per cycle pair at unit_lanes > 1, in place or apart) vs quant's residual_add,
    and its cycles vs the cycle model."""
    cfg = dataclasses.replace(TINY, unit_lanes=unit_lanes)
    lanes = cfg.lanes
    x = torch.randint(-128, 128, (2 * words, lanes), generator=torch.Generator().manual_seed(21 + words))
    a_addr, b_addr = 0, words
    dst_addr = {"a": a_addr, "b": b_addr, "apart": 2 * words}[dst]
    add = Instr(Op.ADD, a_addr=a_addr, b_addr=b_addr, dst_addr=dst_addr, count=words, mult_a=23000, mult_b=41000,
                shift=15)
    prog = Program([Instr(Op.LOAD, mem=Mem.ACT, addr=0, count=2 * words), add,
                    Instr(Op.STORE, addr=dst_addr, count=words), Instr(Op.END)],
                   {}, [Load(INPUT_BLOB, 0, 2 * words, Mem.ACT, 0)], (2 * words, lanes), words, lanes)
    out = run_top(cfg, prog, x)
    got = block_ref.unpack_matrix(cfg, out["stored"], words, lanes)
    expected = residual_add(x[:words], x[words:], 23000, 41000, 15)
    assert_equal(got, expected, f"ADD of {words} words at unit_lanes={unit_lanes} (dst {dst})")
    measured = profile_program(cfg, prog, {INPUT_BLOB: block_ref.pack_matrix(cfg, x)})["per_instr"][1]
    assert measured == CycleModel(cfg).instr_cycles(add, 0), (measured, unit_lanes)


def test_unbuilt_unit_stops_with_error():
    cfg = dataclasses.replace(TINY, gelu=False)
    prog = Program([Instr(Op.GELU, rows=1, cols=4), Instr(Op.END)], {}, [], (1, 16), 1, 16)
    out = run_top(cfg, prog, torch.zeros((1, 16), dtype=torch.int64), max_cycles=100)
    assert out["error"] == 1


def test_controller_refuses_bad_config():
    with pytest.raises(TypeError, match="config must be a HwConfig, not int"):
        Controller(config=3)
    wide = dataclasses.replace(BASE, pe_cols=2, max_heads=4, act_depth=65536, weight_depth=32768)
    with pytest.raises(ValueError, match="max_heads <= lanes, not 4 > 2"):
        Controller(config=wide)


@pytest.mark.parametrize(("keep", "packing", "unit_lanes"), [("mixed", False, 1), ("no_selector", True, 1),
                                                             ("mixed", True, 2)])
def test_tiny_block_with_fused_gelu_matches_reference(keep, packing, unit_lanes):
    """fuse_gelu on (fc1 and the selector MLPs' GEMMs apply the GELU in their drain) and off, both
    bit-exact against the reference; fused, the program runs in fewer cycles."""
    cfg, n = dataclasses.replace(TINY, dsp_packing=packing, unit_lanes=unit_lanes), 5
    fused_cfg = dataclasses.replace(cfg, fuse_gelu=True)
    x = torch.randint(-128, 128, (n, cfg.max_embed_dim), generator=torch.Generator().manual_seed(12))
    selector = keep != "no_selector"
    p = block_ref.make_block_case(x, dim=16, heads=2, mlp=32, selector=selector, seed=13, keep=keep,
                                  num=cfg.numerics)
    expected, _ = block_ref.reference(x, p, cfg.numerics)
    cycles = {}
    for c in (cfg, fused_cfg):
        prog = block_ref.block_program(c, p, n)
        assert any(i.op == Op.GELU for i in prog.instrs) != c.fuse_gelu
        out = run_top(c, prog, x)
        assert not out["error"] and out["dma_left"] == 0
        got = block_ref.unpack_matrix(c, out["stored"], len(out["stored"]) // c.row_words(16), 16)
        assert_equal(got, expected, f"tiny block, fuse_gelu={c.fuse_gelu}, dsp_packing={packing} ({keep})")
        cycles[c.fuse_gelu] = out["cycles"]
    assert cycles[True] < cycles[False], cycles
