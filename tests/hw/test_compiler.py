"""hw/compiler.py without simulation: word layouts round-trip, the LOAD table matches the LOAD
instructions, refusals quote the offending value. (Programs run on EncoderTop in
tests/hw/test_controller.py and, for a whole model, tests/sw/test_program.py.)"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vitforge.hw.compiler import INPUT_BLOB, compile_block, pack_matrix, unpack_matrix
from vitforge.hw.config import BASE
from vitforge.hw.isa import PER_TOKEN, TOKENS, Op
from vitforge.sim.benches import reference as block_ref

TINY = dataclasses.replace(BASE, act_depth=4096, weight_depth=1024, param_depth=64, imem_depth=128,
                           max_tokens=6, max_embed_dim=16, max_mlp_dim=32, max_heads=2)


@pytest.mark.parametrize(("rows", "cols"), [(1, 1), (3, 4), (5, 9)])
def test_pack_unpack_roundtrip(rows, cols):
    x = torch.randint(-128, 128, (rows, cols), generator=torch.Generator().manual_seed(rows * cols))
    assert torch.equal(unpack_matrix(TINY, pack_matrix(TINY, x), rows, cols), x)


@pytest.mark.parametrize("selector", [False, True])
def test_block_program_loads_and_token_counts(selector):
    p = block_ref.make_block_params(dim=16, heads=2, mlp=32, selector=selector, seed=1)
    prog = compile_block(block_ref.as_block(p), TINY, 5)
    loads = [i for i in prog.instrs if i.op == Op.LOAD]
    assert [(ld.mem, ld.addr, ld.count) for ld in prog.loads] == [(i.mem, i.addr, i.count) for i in loads]
    assert prog.loads[0].blob == INPUT_BLOB and prog.loads[0].count == 5 * TINY.row_words(16)
    store = next(i for i in prog.instrs if i.op == Op.STORE)
    # After SELECT the token count is dynamic: TOKENS sizes, PER_TOKEN word counts.
    assert (store.count == (PER_TOKEN | TINY.row_words(16))) == selector
    assert any(i.op == Op.GEMM and i.m == TOKENS for i in prog.instrs) == selector
    assert prog.instrs[-1].op == Op.END
    # Every image is loaded; the block's weights (and its parameters) come in one LOAD each.
    assert {ld.blob for ld in prog.loads} - {INPUT_BLOB} == set(prog.blobs)
    assert {"blocks.0.weights", "blocks.0.params"} <= set(prog.blobs)
    # Every instruction is named by its layer, in program order, each layer one contiguous run.
    expected = ["input", *(["selectors.0"] if selector else []), "blocks.0", "output"]
    assert len(prog.layers) == len(prog.instrs) and prog.layer_names() == expected
    runs = [name for k, name in enumerate(prog.layers) if k == 0 or prog.layers[k - 1] != name]
    assert runs == expected
    assert prog.layers[prog.instrs.index(store)] == "output"
    if selector:
        select = next(k for k, i in enumerate(prog.instrs) if i.op == Op.SELECT)
        assert prog.layers[select] == "selectors.0"


def test_refusals_quote_values():
    p = block_ref.make_block_params(dim=16, heads=2, mlp=32, selector=True, seed=1)
    with pytest.raises(ValueError, match=r"n_tokens must be in 1\.\.max_tokens=6, not 7"):
        compile_block(block_ref.as_block(p), TINY, 7)
    # head_dim = lanes compiles (the selector's global half gets its own words); below lanes it cannot.
    compile_block(block_ref.as_block(p), dataclasses.replace(TINY, pe_cols=8), 5)
    wide = dataclasses.replace(TINY, pe_cols=16, max_embed_dim=32)
    with pytest.raises(ValueError, match="head_dim a multiple of lanes, not heads=2, head_dim=8, lanes=16"):
        compile_block(block_ref.as_block(p), wide, 5)


def test_deit_tiny_with_selectors_compiles_for_zcu102():
    """DeiT's head_dim (64) equals zcu102's lanes: the selector program compiles and fits the preset."""
    from vitforge.hw.config import get_preset
    from vitforge.sw.latency import shape_program
    from vitforge.sw.vit import get_config

    hw = get_preset("zcu102")
    cfg = get_config("deit-tiny").with_selectors((3, 6, 9), (0.7, 0.49, 0.343))
    assert cfg.embed_dim // cfg.num_heads == hw.lanes
    prog = shape_program(cfg, hw)
    assert sum(i.op == Op.SELECT for i in prog.instrs) == 3
    assert len(prog.instrs) <= hw.imem_depth
    assert {"selectors.3", "selectors.6", "selectors.9"} <= set(prog.layer_names())


@pytest.mark.parametrize("selectors", [False, True])
def test_deit_small_fits_zcu102(selectors):
    """The MLP's hidden buffer reuses the attention's QKV/scores/probabilities: DeiT-S's block needs
    16,942 activation words instead of 21,670, within zcu102's act_depth (dense and pruned)."""
    from vitforge.hw.config import get_preset
    from vitforge.sw.latency import shape_program
    from vitforge.sw.vit import get_config

    hw = get_preset("zcu102")
    cfg = get_config("deit-small")
    if selectors:
        cfg = cfg.with_selectors((3, 6, 9), (0.7, 0.49, 0.343))
    prog = shape_program(cfg, hw)
    assert len(prog.instrs) <= hw.imem_depth
    fc1 = next(i for i in prog.instrs if i.op == Op.GEMM and i.n == cfg.mlp_dim)
    qkv = next(i for i in prog.instrs if i.op == Op.GEMM and i.n == 3 * cfg.embed_dim)
    assert fc1.dst_addr == qkv.dst_addr  # fc1 writes where QKV was


def test_gemm_longer_than_the_accumulators_is_refused():
    """The PE accumulators are exact up to max_gemm_k steps (HwConfig.pe_acc_bits): a patch embedding
    with more features is refused with the sizes named, one at the limit compiles."""
    from vitforge.sw.latency import shape_program
    from vitforge.sw.vit import get_config

    demo = get_config("demo")
    at_limit = dataclasses.replace(demo, patch_size=16)  # 1 x 16 x 16 = 256 = BASE.max_gemm_k
    assert at_limit.in_chans * at_limit.patch_size**2 == BASE.max_gemm_k
    shape_program(at_limit, BASE)
    over = dataclasses.replace(demo, patch_size=16, in_chans=2)  # 512 features
    with pytest.raises(ValueError, match=r"k=512, more than this config's max_gemm_k=256"):
        shape_program(over, BASE)


@pytest.mark.parametrize("lanes", [1, 4])
def test_add_one_word_past_an_operand_is_refused_on_the_pipelined_adder(lanes):
    # The pipelined ADD (unit_lanes > 1) writes word i while it reads word i + 1, so a destination one
    # word past an operand would read a word before it is written; in place or apart is exact.
    from vitforge.hw.compiler import Add, _Compiler, _Mat

    c = _Compiler(dataclasses.replace(BASE, unit_lanes=lanes))
    p = Add(1, 1, 0)
    c.add(_Mat(10, 1), _Mat(40, 1), _Mat(10, 1), 8, p)  # in place on a
    c.add(_Mat(10, 1), _Mat(40, 1), _Mat(40, 1), 8, p)  # in place on b
    c.add(_Mat(10, 1), _Mat(40, 1), _Mat(70, 1), 8, p)  # apart
    if lanes == 1:
        c.add(_Mat(10, 1), _Mat(40, 1), _Mat(11, 1), 8, p)
        assert len(c.prog) == 4
    else:
        for dst in (11, 41):
            with pytest.raises(ValueError, match=f"ADD to word {dst} overlaps"):
                c.add(_Mat(10, 1), _Mat(40, 1), _Mat(dst, 1), 8, p)
        assert len(c.prog) == 3
