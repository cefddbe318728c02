"""The training loop: budgets, validation-driven stopping, the best checkpoint, non-convergence."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from vitforge.sw.data import Split
from vitforge.sw.train import (
    DECAY_FRACTION,
    MIN_CONSTANT_FRACTION,
    Budgets,
    StageBudget,
    TrainConfig,
    default_eval_every,
    fit,
)
from vitforge.sw.vit import VisionTransformer


def test_stage_budget_scales_with_the_data_and_clamps():
    b = StageBudget(passes=2.0, min_steps=10, max_steps=100)
    assert b.steps(640, 64) == 20          # 2 passes of 10 steps
    assert b.steps(64, 64) == 10           # floor
    assert b.steps(64_000, 64) == 100      # cap
    with pytest.raises(ValueError, match="min_steps <= max_steps"):
        StageBudget(passes=1.0, min_steps=5, max_steps=4)


def test_budgets_resolve_given_and_scaled():
    tc = TrainConfig(dense_steps=7)
    b = Budgets.resolve(tc, 64_000)
    assert b.dense == 7 and b.prune > 60 and b.qat > 20


@pytest.mark.parametrize(("field", "value", "match"), [
    ("val_fraction", 1.5, r"val_fraction must be in \(0, 1\), not 1.5"),
    ("dense_steps", 0, "dense_steps must be a positive integer or None, not 0"),
    ("patience", 0, "patience must be positive, not 0"),
    ("lr", -1.0, "lr must be positive, not -1.0"),
])
def test_train_config_names_bad_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{field: value})


def test_eval_every_default():
    assert default_eval_every(1500, 10_000, 64) == 39       # a quarter pass of 157 steps
    assert default_eval_every(80, 10_000, 64) == 10         # 8 checks per budget
    assert default_eval_every(8, 100, 64) == 5              # never more often than every 5 steps


def _toy(tiny_cfg, n: int = 192, seed: int = 0) -> Split:
    """A learnable toy problem: the label is the brightest of four image quadrants."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, tiny_cfg.image_size, tiny_cfg.image_size, generator=g) * 0.2
    y = torch.randint(0, 4, (n,), generator=g)
    h = tiny_cfg.image_size // 2
    for i in range(n):
        r, c = divmod(int(y[i]), 2)
        x[i, 0, r * h:(r + 1) * h, c * h:(c + 1) * h] += 0.8
    return Split(x[: n * 3 // 4], y[: n * 3 // 4], x[n * 3 // 4:], y[n * 3 // 4:])


def _model(tiny_cfg) -> VisionTransformer:
    torch.manual_seed(0)
    m = VisionTransformer(tiny_cfg.with_selectors((), ()))
    m.set_poly(False)
    return m


def _loss(model):
    def loss_fn(xb, yb):
        logits = model(xb)
        return F.cross_entropy(logits, yb), logits
    return loss_fn


def test_patience_ends_a_stage_that_stops_improving(tiny_cfg):
    """The toy task is learnt in a few dozen steps: with improvements counted only from 20%,
    patience ends the constant phase once it may (a quarter of its budget), the stage counts as
    converged and ends far below its budget."""
    split, model = _toy(tiny_cfg), _model(tiny_cfg)
    tc = TrainConfig(batch_size=32, eval_every=2, patience=2, min_delta=0.2, progress=False)
    budget = 400
    res = fit(model, split, tc, "dense", budget, 3e-3, _loss(model), 1, log=lambda s: None)
    assert res.stopped == "patience" and res.converged
    stable_cap = math.floor(budget / (1 + DECAY_FRACTION))
    decay_start = res.steps - math.ceil(DECAY_FRACTION * res.steps / (1 + DECAY_FRACTION))
    assert math.ceil(MIN_CONSTANT_FRACTION * stable_cap) <= decay_start < stable_cap
    assert res.best_val_acc > 90.0


def test_a_plateau_at_chance_is_not_convergence(tiny_cfg):
    """A learning rate too small to learn anything: the flat loss does not end the stage by
    patience; it runs into its budget and reports that it did not converge."""
    split, model = _toy(tiny_cfg), _model(tiny_cfg)
    tc = TrainConfig(batch_size=32, eval_every=2, patience=2, progress=False)
    res = fit(model, split, tc, "dense", 40, 1e-9, _loss(model), 1, log=lambda s: None)
    assert res.stopped == "budget" and not res.converged
    assert [h["step"] for h in res.history][:3] == [2, 4, 6]


def test_budget_hit_while_improving_is_not_converged(tiny_cfg):
    split, model = _toy(tiny_cfg), _model(tiny_cfg)
    tc = TrainConfig(batch_size=32, eval_every=2, patience=3, progress=False)
    res = fit(model, split, tc, "dense", 12, 3e-3, _loss(model), 1, log=lambda s: None)
    assert res.stopped == "budget" and not res.converged
    assert res.steps <= 12
    losses = [h["val_loss"] for h in res.history]
    assert losses[-1] < losses[0]


def test_the_best_validation_checkpoint_is_kept(tiny_cfg):
    """A learning rate that makes training diverge: the model ends at its best validation check,
    and its validation loss is the one recorded as best."""
    split, model = _toy(tiny_cfg), _model(tiny_cfg)
    tc = TrainConfig(batch_size=32, eval_every=2, patience=2, progress=False)
    loss_fn = _loss(model)
    res = fit(model, split, tc, "dense", 40, 0.5, loss_fn, 1, log=lambda s: None)
    assert res.best_val_loss == min(h["val_loss"] for h in res.history)
    model.train()
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(7)
        total = sum(float(loss_fn(split.x_val[i:i + 32], split.y_val[i:i + 32])[0]) * len(split.y_val[i:i + 32])
                    for i in range(0, len(split.y_val), 32))
    assert total / len(split.y_val) == pytest.approx(res.best_val_loss, rel=1e-6)


def test_progress_lines_when_not_a_terminal(tiny_cfg):
    split, model = _toy(tiny_cfg), _model(tiny_cfg)
    lines = []
    fit(model, split, TrainConfig(batch_size=32, eval_every=3, progress=None), "dense", 6, 1e-3, _loss(model), 1,
        log=lines.append)
    assert [ln.split(":")[0] for ln in lines] == ["dense step 3/6 (constant)", "dense step 5/6 (decay)"]


def test_too_few_checks_show_no_improvement(tiny_cfg):
    """One check before the decay (QAT's case) shows no trend: no warning, once the model learns."""
    split, model = _toy(tiny_cfg), _model(tiny_cfg)
    tc = TrainConfig(batch_size=32, progress=False)
    fit(model, split, tc, "dense", 60, 3e-3, _loss(model), 1, log=lambda s: None)  # learn the toy first
    res = fit(model, split, replace(tc, eval_every=5), "qat", 10, 1e-4, _loss(model), 2, log=lambda s: None)
    assert res.stopped == "budget" and res.converged and [h["step"] for h in res.history] == [5, 10]
