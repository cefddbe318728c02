"""Threshold calibration over the model's prefix equals the whole-forward calibration it replaced."""

from __future__ import annotations

import pytest
import torch

from vitforge.quant.selector import SCORE_FMT
from vitforge.sw.train import calibrate_quant, calibrate_thresholds
from vitforge.sw.vit import Trace, VisionTransformer


@torch.no_grad()
def _whole_forward_thresholds(model: VisionTransformer, x: torch.Tensor, batch: int) -> tuple[int, ...]:
    """The reference: for each selector in turn, whole forwards with the thresholds set so far."""
    model.eval()
    model.set_decision("threshold")
    n = model.cfg.num_patches
    out = []
    for k, b in enumerate(model.cfg.selector_blocks):
        fused, alive = [], []
        for i in range(0, len(x), batch):
            tr = Trace()
            model(x[i:i + batch], trace=tr)
            f = tr.fused[k][:, 1:1 + n]
            prev = tr.alive[k - 1][:, 1:1 + n] if k else torch.ones_like(f)
            fused.append(torch.floor(f.to(torch.float64) * (1 << SCORE_FMT.frac) + 1e-9))
            alive.append(prev > 0.5)
        f, a = torch.cat(fused), torch.cat(alive)
        rates = torch.stack([((f >= t) & a).to(torch.float64).mean() for t in range(SCORE_FMT.qmax + 1)])
        err = (rates - model.cfg.keep_rates[k]).abs()
        best = int(torch.nonzero(err <= err.min() + 1e-12).max())
        model.selectors[str(b)].threshold = best
        out.append(best)
    return tuple(out)


def _model(tiny_cfg, blocks, rates, seed) -> VisionTransformer:
    torch.manual_seed(seed)
    m = VisionTransformer(tiny_cfg.with_selectors(blocks, rates))
    with torch.no_grad():  # spread the untrained selectors' scores so that thresholds differ
        for p in m.selectors.parameters():
            p.mul_(2.0)
    return m


@pytest.mark.parametrize("mode", ["float", "qat"])
@pytest.mark.parametrize(("blocks", "rates"), [((1,), (0.5,)), ((1, 2), (0.7, 0.3)), ((1, 2), (0.5, 0.25))])
def test_prefix_calibration_equals_whole_forwards(tiny_cfg, mode, blocks, rates):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(100, 1, tiny_cfg.image_size, tiny_cfg.image_size, generator=g)
    model = _model(tiny_cfg, blocks, rates, seed=3)
    if mode == "qat":
        model.set_poly(True)
        calibrate_quant(model, x[:64])
    reference = _whole_forward_thresholds(model, x, batch=32)
    for sel in model.selectors.values():  # start from thresholds the calibration must overwrite
        sel.threshold = 0
    got = calibrate_thresholds(model, x, batch=32)  # 4 batches, the last one short
    assert got == reference
    assert model.cfg.thresholds == reference
    assert tuple(model.selectors[str(b)].threshold for b in blocks) == reference
    assert all(0 < t < SCORE_FMT.qmax for t in reference), "a degenerate case checks nothing"


def test_the_later_threshold_follows_the_earlier_decision(tiny_cfg):
    """The second selector is calibrated on the tokens the first one's calibrated threshold keeps."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(100, 1, tiny_cfg.image_size, tiny_cfg.image_size, generator=g)
    lo = calibrate_thresholds(_model(tiny_cfg, (1, 2), (0.5, 0.25), seed=3), x)
    hi = calibrate_thresholds(_model(tiny_cfg, (1, 2), (0.7, 0.25), seed=3), x)
    assert lo[0] > hi[0]  # keeping fewer tokens takes a higher first threshold
    assert lo[1] != hi[1]  # and changes what the second selector sees
