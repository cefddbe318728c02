from __future__ import annotations

import pytest
import torch

from vitforge.quant.fake import set_mode
from vitforge.sw.latency import model_macs
from vitforge.sw.vit import PRESETS, Trace, VisionTransformer, ViTConfig, get_config, patchify


@pytest.mark.parametrize(("name", "dim", "depth", "heads", "gmacs"), [
    ("deit-tiny", 192, 12, 3, 1.26),   # DeiT-T: 1.3 GFLOPs (multiply-adds) in the paper
    ("deit-small", 384, 12, 6, 4.6),
    ("deit-base", 768, 12, 12, 17.6),
])
def test_deit_presets(name, dim, depth, heads, gmacs):
    cfg = get_config(name)
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.num_tokens) == (dim, depth, heads, 197)
    assert model_macs(cfg) / 1e9 == pytest.approx(gmacs, rel=0.03)


def test_demo_preset_geometry():
    cfg = PRESETS["demo"]
    assert cfg.num_tokens == 65 and cfg.embed_dim == 64 and cfg.num_heads == 4 and 4 <= cfg.depth <= 6


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"image_size": 30}, "multiple of patch_size"),
    ({"embed_dim": 30}, "divisible by num_heads"),
    ({"selector_blocks": (0,), "keep_rates": (0.5,)}, "selector_blocks"),
    ({"selector_blocks": (1, 2), "keep_rates": (0.3, 0.5)}, "non-increasing"),
    ({"selector_blocks": (1,), "keep_rates": ()}, "keep rates"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ViTConfig(**kwargs)


def test_patchify_order():
    img = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(1, 2, 8, 8)
    p = patchify(img, 4)
    assert p.shape == (1, 4, 32)
    assert torch.equal(p[0, 1, :16], img[0, 0, :4, 4:8].reshape(-1))  # second patch: top right, channel 0
    assert torch.equal(p[0, 2, 16:], img[0, 1, 4:8, :4].reshape(-1))


def test_selectors_keep_class_and_pruned_stay_pruned(tiny_cfg):
    TINY = tiny_cfg
    torch.manual_seed(0)
    model = VisionTransformer(TINY.with_selectors((1, 2), (0.5, 0.3)))
    model.train()
    tr = Trace()
    model(torch.rand(8, 1, 16, 16), trace=tr)
    a1, a2 = tr.alive
    assert bool((a1[:, 0] == 1).all()) and bool((a2[:, 0] == 1).all())
    n = TINY.num_tokens
    assert bool((a2[:, :n] <= a1[:, :n]).all())  # a token pruned before block 1 stays pruned
    assert set(a1.unique().tolist()) <= {0.0, 1.0}


def test_float_and_qat_forward_shapes(tiny_cfg):
    TINY = tiny_cfg
    torch.manual_seed(0)
    model = VisionTransformer(TINY.with_selectors((1,), (0.5,)))
    model.eval()
    model.set_decision("threshold")
    x = torch.rand(3, 1, 16, 16)
    set_mode(model, "calibrate")
    with torch.no_grad():
        y_float = model(x)
    set_mode(model, "qat")
    with torch.no_grad():
        y_q = model(x)
    assert y_float.shape == y_q.shape == (3, 10)
    codes = y_q.double() / model.head.out_scale
    # QAT logits are int8 codes times the scale (float32 products: exact up to rounding of the product).
    assert float((codes - codes.round()).abs().max()) < 1e-3
    assert float(codes.abs().max()) <= 128


def test_fused_attention_is_the_three_module_path_in_float(tiny_cfg, monkeypatch):
    """Float blocks without a token mask run ``scaled_dot_product_attention``: the same function
    as QuantMatMul -> softmax -> QuantMatMul (value and gradient, to float rounding); a mask,
    calibration, QAT or the polynomial softmax take the three modules."""
    from vitforge.sw.vit import Attention

    torch.manual_seed(0)
    model = VisionTransformer(tiny_cfg)
    model.set_poly(False)
    x = torch.rand(8, 1, 16, 16)
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or sdpa(*a, **k))

    def run():
        model.zero_grad(set_to_none=True)
        out = model(x)
        (out * torch.arange(out.shape[-1])).sum().backward()
        return out.detach(), [p.grad.clone() for p in model.parameters()]

    fused, g_fused = run()
    assert len(calls) == tiny_cfg.depth
    with monkeypatch.context() as m:
        m.setattr(Attention, "fused", lambda self, alive: False)
        plain, g_plain = run()
    assert len(calls) == tiny_cfg.depth
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_fused, g_plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)

    attn = model.blocks[0].attn
    assert attn.fused(None) and not attn.fused(torch.ones(8, tiny_cfg.num_tokens))
    model.set_poly(True)
    assert not attn.fused(None)
    model.set_poly(False)
    for mode in ("calibrate", "qat"):
        set_mode(model, mode)
        assert not attn.fused(None)


@pytest.mark.parametrize("poly", [True, False])
def test_qat_forward_without_autograd_skips_the_twins_and_gives_the_same_values(tiny_cfg, poly, monkeypatch):
    """Under ``torch.no_grad`` the quantized units skip their float twins (``quant.fake.wants_twin``);
    logits, fused scores and masks equal those of a forward with autograd, bit for bit, and with
    autograd the twins are computed and carry a gradient."""
    from vitforge.quant import fake
    from vitforge.quant import nonlinear as nl

    torch.manual_seed(0)
    model = VisionTransformer(tiny_cfg.with_selectors((1, 2), (0.6, 0.3)))
    model.set_poly(poly)
    model.eval()
    model.set_decision("threshold")
    for sel in model.selectors.values():
        sel.threshold = 60
    x = torch.rand(16, 1, 16, 16)
    set_mode(model, "calibrate")
    with torch.no_grad():
        model(x)
    set_mode(model, "qat")
    calls = []
    for name in ("float_exp", "float_softmax"):
        real = getattr(nl, name)
        monkeypatch.setattr(nl, name, lambda *a, _r=real, **k: calls.append(1) or _r(*a, **k))

    with torch.no_grad():
        tr_ng = Trace()
        y_ng = model(x, trace=tr_ng)
    assert not calls or not poly, "no twin may run without autograd"
    assert fake.wants_twin(True) and fake.wants_twin(False)  # autograd records here

    tr = Trace()
    y = model(x, trace=tr)
    if poly:
        assert calls, "with autograd the polynomial twins run"
    y.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert torch.equal(y_ng, y.detach())
    assert all(torch.equal(a, b.detach()) for a, b in zip(tr_ng.fused, tr.fused, strict=True))
    assert all(torch.equal(a, b.detach()) for a, b in zip(tr_ng.alive, tr.alive, strict=True))
    assert 0 < float(tr.alive[-1][:, :-1].mean()) < 1, "the selectors must prune some tokens, not all"
