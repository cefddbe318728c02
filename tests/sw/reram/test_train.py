"""Crossbar training: the penalties, pruning, checkpoints, and resuming to the same bytes."""

from __future__ import annotations

import json

import pytest
import torch

from vitforge.quant.crossbar import CrossbarConfig
from vitforge.sw.data import ImageData
from vitforge.sw.reram import train as train_module
from vitforge.sw.reram.budget import model_budget_excess, snap_codes
from vitforge.sw.reram.evaluate import evaluate
from vitforge.sw.reram.layers import crossbar_layers
from vitforge.sw.reram.models import ModelConfig
from vitforge.sw.reram.train import (
    MODEL_FILE,
    STATE_FILE,
    TrainConfig,
    bitslice_penalty,
    init_model,
    load_model,
    prune,
    train,
)

TINY = ModelConfig(channels=2, image_size=8)


def _data(n: int = 48) -> ImageData:
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 10
    x = torch.rand(n, 1, 8, 8, generator=gen) * 0.2
    x[torch.arange(n), 0, y % 8, y % 8] += 1.0  # a learnable cue
    return ImageData(x, y, x[:16].clone(), y[:16].clone(), tuple(str(i) for i in range(10)))


def _tc(method: str, **kw) -> TrainConfig:
    return TrainConfig(method=method, model=TINY, float_epochs=1, qat_epochs=1, finetune_epochs=1, batch_size=16,
                       max_train=None, progress=False, **kw)


def test_bitslice_penalty_counts_slice_magnitudes_and_has_gradients():
    model = init_model(TINY, 0)
    cfg = CrossbarConfig(cell_bits=2)
    pen = bitslice_penalty(model, cfg)
    # equal to the mean over weights of the summed slices of floor(|w| / scale)
    total, count = 0.0, 0
    for _, layer in crossbar_layers(model):
        m = torch.floor(layer.weight_matrix().detach().abs() / layer.weight_scale())
        total += float(sum(((m // 4**k) % 4).sum() for k in range(4)))
        count += m.numel()
    assert pen.item() == pytest.approx(total / count, rel=1e-5)
    pen.backward()
    assert float(model.conv.weight.grad.abs().sum()) > 0


def test_bitslice_penalty_gradient_is_a_reweighted_l1():
    """The floor-straight-through penalty's gradient is ``sign(w) / (scale N) * sum 2^(-k c)`` over
    the slices k that are nonzero (``|0|`` has gradient 0): L1 per layer, weighted by which slices
    are set, never a push on one slice alone."""
    model = init_model(TINY, 0)
    cfg = CrossbarConfig(cell_bits=2)
    bitslice_penalty(model, cfg).backward()
    n = sum(layer.weight.numel() for _, layer in crossbar_layers(model))
    for _, layer in crossbar_layers(model):
        scale = float(layer.weight_scale())
        m = torch.floor((layer.weight * layer.mask).detach().abs() / scale)
        factor = sum(((m // 4**k) % 4 != 0).to(m.dtype) * 4.0 ** -k for k in range(cfg.n_slices))
        expected = torch.sign(layer.weight.detach()) * layer.mask * factor / (scale * n)
        assert torch.allclose(layer.weight.grad, expected, rtol=1e-5, atol=1e-12)
        assert len(torch.unique(factor)) > 2  # not one constant factor: it differs from plain L1


def test_adc_budget_training_gives_a_model_that_never_clips(tmp_path):
    xb = CrossbarConfig(rows=8, cell_bits=2, adc_bits=(3, 3, 3, 1))
    model = train(_tc("bitslice-l1", crossbar=xb, adc_budget=True), _data(), tmp_path)
    assert model_budget_excess(model, xb) == 0
    unbudgeted = train(_tc("bitslice-l1", crossbar=xb), _data(), tmp_path / "plain")
    assert model_budget_excess(unbudgeted, xb) > 0  # the budget is what makes it fit
    data = _data()
    int8 = evaluate(model, data.x_test, data.y_test)
    xbar = evaluate(model, data.x_test, data.y_test, xb)
    assert xbar["top1"] == int8["top1"] and max(xbar["clip_rate"]) == 0.0


def test_snap_training_leaves_nothing_to_snap(tmp_path):
    xb = CrossbarConfig(rows=8, cell_bits=2, adc_bits=(3, 3, 3, 1))
    model = train(_tc("bitslice-l1", crossbar=xb, adc_budget=True, snap=2), _data(), tmp_path)
    assert model_budget_excess(model, xb) == 0
    for _, layer in crossbar_layers(model):
        codes = layer.weight_codes().to(torch.int64)
        snapped = snap_codes(codes, xb, 2)
        keepers = snapped != codes
        assert int(keepers.sum()) <= 1  # only the code that sets the scale is left unsnapped


def test_prune_masks_small_codes():
    model = init_model(TINY, 0)
    frac = prune(model, 20)
    assert 0 < frac < 1
    for _, layer in crossbar_layers(model):
        codes = layer.weight_codes()
        assert int((codes.abs() < 20).sum() - (codes == 0).sum()) == 0  # nothing small survives


@pytest.mark.parametrize("method", ["l1", "bitslice-l1", "resna"])
def test_training_writes_loadable_checkpoints(tmp_path, method):
    model = train(_tc(method, crossbar=CrossbarConfig(cell_bits=4, prog_sigma=0.5)), _data(), tmp_path)
    loaded, tc, meta = load_model(tmp_path / MODEL_FILE)
    assert tc.method == method
    for (_, a), (_, b) in zip(crossbar_layers(model), crossbar_layers(loaded), strict=True):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.in_scale, b.in_scale) and float(a.in_scale) > 0
    stages = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert stages == sorted(f"{s}.safetensors" for s, _ in tc.stages)
    if method != "resna":
        assert meta["pruned"] > 0


class _Crash(Exception):
    pass


@pytest.mark.parametrize("crash_after", [1, 2])
def test_resume_after_a_crash_gives_the_same_bytes(tmp_path, monkeypatch, crash_after):
    tc = _tc("bitslice-l1")
    train(tc, _data(), tmp_path / "full")
    saves = []
    real = train_module.atomic_torch_save

    def crashing_save(obj, path):
        real(obj, path)
        saves.append(path)
        if len(saves) == crash_after:
            raise _Crash

    monkeypatch.setattr(train_module, "atomic_torch_save", crashing_save)
    with pytest.raises(_Crash):
        train(tc, _data(), tmp_path / "cut")
    monkeypatch.setattr(train_module, "atomic_torch_save", real)
    assert json.loads(torch.load(tmp_path / "cut" / STATE_FILE, weights_only=True)["progress"])["stage"] == crash_after
    train(tc, _data(), tmp_path / "cut")
    assert (tmp_path / "cut" / MODEL_FILE).read_bytes() == (tmp_path / "full" / MODEL_FILE).read_bytes()


def test_a_different_config_is_not_resumed(tmp_path):
    train(_tc("plain"), _data(), tmp_path)
    with pytest.raises(ValueError, match="another training config"):
        train(_tc("l1"), _data(), tmp_path)


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="method must be one of"):
        TrainConfig(method="dropout")
    with pytest.raises(ValueError, match="qat_epochs must be a finite number >= 0"):
        TrainConfig(qat_epochs=-1)
    with pytest.raises(ValueError, match="adc_budget needs a fine-tuning method"):
        TrainConfig(method="plain", crossbar=CrossbarConfig(adc_bits=3), adc_budget=True)
    with pytest.raises(ValueError, match="adc_budget needs ADC bits below lossless"):
        TrainConfig(method="bitslice-l1", adc_budget=True)
    with pytest.raises(ValueError, match="snap must be an integer >= 0, not -1"):
        TrainConfig(method="l1", snap=-1)
    with pytest.raises(ValueError, match="snap needs a fine-tuning method"):
        TrainConfig(method="resna", snap=2)
    with pytest.raises(ValueError, match="channels must be a positive integer, not 0"):
        ModelConfig(channels=0)
