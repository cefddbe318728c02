# amaranth: UnusedElaboratable=no
"""The compiled program of a whole (tiny, random) ViT on hw/top.py EncoderTop in the Amaranth
simulator, fed through the LOAD table, vs sw/golden.py's logits, bit for bit: patch embedding,
class token and position embedding, a dense block, a token selector (some tokens kept, some
pruned) in front of the second block, final LayerNorm and classifier head."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vitforge.hw.compiler import INPUT_BLOB, pack_matrix, unpack_matrix
from vitforge.hw.config import BASE
from vitforge.hw.isa import TOKENS, Op
from vitforge.quant.quantize import quantize
from vitforge.sim.amsim import run_encoder_top
from vitforge.sim.scoreboard import assert_equal
from vitforge.sw import random_model
from vitforge.sw.golden import GoldenModel
from vitforge.sw.program import compile_program
from vitforge.sw.vit import ViTConfig, patchify

#: 8x8 image in 4x4 patches: 4 patches + class token; D=16 in 2 heads of 8, MLP 32, 4 classes.
MODEL = ViTConfig(image_size=8, patch_size=4, in_chans=1, num_classes=4, embed_dim=16, depth=2, num_heads=2,
                  mlp_ratio=2.0, selector_blocks=(1,), keep_rates=(0.5,))
#: Two selectors: the second one's token means run over the dynamic token count (TOKENS).
MODEL2 = dataclasses.replace(MODEL, depth=3, selector_blocks=(1, 2), keep_rates=(0.5, 0.5))
HW = dataclasses.replace(BASE, act_depth=4096, weight_depth=1024, param_depth=64, imem_depth=256,
                         max_tokens=MODEL.num_tokens, max_embed_dim=16, max_mlp_dim=32, max_heads=2)



@pytest.mark.parametrize(("model", "seed"), [(MODEL, 3), (MODEL2, 5)], ids=["one_selector", "two_selectors"])
def test_tiny_model_matches_golden(model, seed):
    image = _image(seed)
    im = random_int_model(seed, _mixed_threshold(seed, image, model), model)
    logits, _, tokens = GoldenModel(im).run(image)
    assert len(set(logits.tolist())) > 1, f"degenerate logits {logits.tolist()}"
    prog = compile_program(im, HW)
    ops = {ins.op for ins in prog.instrs}
    assert {Op.SELECT, Op.LOAD, Op.STORE, Op.SIGMOID} <= ops
    means = [ins.k for ins in prog.instrs if ins.op == Op.GEMM and ins.mean]
    assert means and (TOKENS in means) == (len(model.selector_blocks) > 1), means
    patches = quantize(patchify(image[None], model.patch_size)[0], im.input_scale)
    out = run_encoder_top(HW, prog, {INPUT_BLOB: pack_matrix(HW, patches)})
    assert out["done"] and not out["error"], out
    assert out["dma_left"] == 0, f"{out['dma_left']} DMA words were never taken"
    assert out["tokens"] == tokens[-1], f"the selector kept {out['tokens']} rows, the golden model {tokens[-1]}"
    got = unpack_matrix(HW, out["stored"], 1, model.num_classes)[0]
    assert_equal(got, logits, "tiny model logits")


def test_program_load_table_matches_loads():
    im = random_int_model(1, 64)
    prog = compile_program(im, HW)
    loads = [ins for ins in prog.instrs if ins.op == Op.LOAD]
    assert [(ld.mem, ld.addr, ld.count) for ld in prog.loads] == [(ins.mem, ins.addr, ins.count) for ins in loads]
    words = prog.dma_words({INPUT_BLOB: [0] * (prog.input_shape[0] * HW.row_words(prog.input_shape[1]))})
    assert len(words) == sum(ins.count for ins in loads)
    blocks = [f"blocks.{i}" for i in range(im.config.depth)]
    for b in sorted(im.thresholds, reverse=True):
        blocks.insert(b, f"selectors.{b}")
    assert prog.layer_names() == ["embed", *blocks, "head"]
    assert prog.layers[0] == "embed" and prog.layers[-1] == "head" and len(prog.layers) == len(prog.instrs)


def random_int_model(seed: int, threshold: int, model: ViTConfig = MODEL):
    return random_model.random_int_model(seed, threshold, model, HW.numerics)


def _image(seed: int) -> torch.Tensor:
    return random_model.random_image(seed, MODEL)


def _mixed_threshold(seed: int, image: torch.Tensor, model: ViTConfig = MODEL) -> int:
    return random_model.mixed_threshold(seed, image, model)
