"""Crossbar layers and models: the int8 mapping, im2col, modes, the majority vote."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from vitforge.quant.crossbar import CrossbarConfig, mvm
from vitforge.sw.reram.device import NoiseConfig
from vitforge.sw.reram.evaluate import evaluate, vote
from vitforge.sw.reram.layers import (
    CrossbarConv2d,
    CrossbarLinear,
    attach,
    calibrate,
    crossbar_layers,
    quantize_codes,
    set_mode,
)
from vitforge.sw.reram.models import ModelConfig
from vitforge.sw.reram.train import init_model


def _calibrated(layer, x):
    layer.mode = "calibrate"
    layer(x)
    return layer


@pytest.mark.parametrize("per_channel", [False, True])
def test_linear_on_a_crossbar_is_the_contract_dequantized(per_channel):
    torch.manual_seed(0)
    lin = _calibrated(CrossbarLinear(40, 6, per_channel=per_channel), torch.randn(8, 40))
    x = torch.randn(5, 40)
    cfg = CrossbarConfig(rows=16, adc_bits=(3, 3, 3, 1))
    attach(lin, cfg)
    lin.mode = "crossbar"
    with torch.no_grad():
        got = lin(x)
    codes_x = quantize_codes(x, lin.in_scale).to(torch.int64)
    codes_w = lin.weight_codes().to(torch.int64)
    scale = lin.in_scale * lin.weight_scale().reshape(-1)
    expected = mvm(codes_x, codes_w.T, cfg).to(torch.float32) * scale + lin.bias.detach()
    assert torch.equal(got, expected)


def test_conv_im2col_equals_an_integer_convolution():
    torch.manual_seed(0)
    conv = _calibrated(CrossbarConv2d(3, 5, 3, stride=2, padding=1, bias=False), torch.randn(4, 3, 9, 9))
    x = torch.randn(2, 3, 9, 9)
    attach(conv, CrossbarConfig(rows=16))  # lossless: the exact integer product
    conv.mode = "crossbar"
    with torch.no_grad():
        got = conv(x) / (conv.in_scale * conv.weight_scale())
    codes_x = quantize_codes(x, conv.in_scale).double()
    codes_w = conv.weight_codes().reshape(conv.weight.shape).double()
    expected = F.conv2d(codes_x, codes_w, stride=2, padding=1)
    # the crossbar's integers, dequantized in float32 and divided back: equal after rounding
    assert torch.equal(got.double().round(), expected)


def test_lossless_crossbar_model_predicts_like_int8():
    model = init_model(ModelConfig(channels=2, image_size=8), 0)
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(6, dtype=torch.int64)
    calibrate(model, x)
    set_mode(model, "qat")
    with torch.no_grad():
        int8_logits = model(x)
    attach(model, CrossbarConfig())
    set_mode(model, "crossbar")
    with torch.no_grad():
        xbar_logits = model(x)
    assert torch.allclose(xbar_logits, int8_logits, atol=1e-4)  # same integers; float32 scale order differs
    assert evaluate(model, x, y)["top1"] == evaluate(model, x, y, CrossbarConfig())["top1"]


def test_noisy_evaluation_is_seeded():
    model = init_model(ModelConfig(channels=2, image_size=8), 0)
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    calibrate(model, x)
    cfg = CrossbarConfig(cell_bits=4, prog_sigma=0.5)
    outs = []
    for seed in (0, 0, 1):
        attach(model, cfg, NoiseConfig(), seed=seed)
        set_mode(model, "crossbar")
        with torch.no_grad():
            outs.append(model(x))
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2])


def test_vote_takes_the_majority():
    logits = torch.tensor([
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
        [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        [[1.0, 0.0, 0.0], [0.9, 0.0, 0.0]],
    ])  # image 0: copies say 0, 1, 0 -> 0; image 1: copies say 1, 2, 0 -> the summed logits' argmax
    logits[2, 1] = torch.tensor([2.0, 0.0, 0.0])  # summed: (2, 1, 1) -> 0
    assert vote(logits).tolist() == [0, 0]


def test_vit_linear_layers_are_on_crossbars():
    model = init_model(ModelConfig(kind="vit"), 0)
    names = [n for n, _ in crossbar_layers(model)]
    assert "patch_embed.linear" in names and "head.linear" in names
    assert len(names) == 2 + 4 * 4  # patch embedding, head, and qkv/proj/fc1/fc2 of 4 blocks


def test_uncalibrated_and_unattached_layers_are_refused():
    lin = CrossbarLinear(4, 2)
    lin.mode = "qat"
    with pytest.raises(ValueError, match="not calibrated"):
        lin(torch.randn(1, 4))
    lin = _calibrated(lin, torch.randn(3, 4))
    lin.mode = "crossbar"
    with pytest.raises(ValueError, match="needs a crossbar"):
        lin(torch.randn(1, 4))
    with pytest.raises(ValueError, match="mode must be one of"):
        set_mode(lin, "analog")
