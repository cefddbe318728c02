"""Accuracy of a crossbar model: int8, or on simulated chips under a crossbar config and operating point.

:func:`evaluate` reports top-1 over noise seeds (mean, spread), every slice's ADC clip rate and
zero-slice ratio. Each seed is one simulated chip (its programming variation and RTN cells) read
with its own per-read noise. With ``vote_copies=3`` the last layer is programmed three times and
the prediction is the majority of the three copies' argmaxes (the summed logits' argmax when all
three differ): ReSNA's majority vote.
"""

from __future__ import annotations

import math
import sys

import torch
from torch import nn

from vitforge.quant.crossbar.config import CrossbarConfig

from .device import NoiseConfig
from .layers import attach, crossbar_layers, detach_sessions, set_mode, zero_slice_ratios
from .sim import ReadStats

#: Images per simulated batch (bounds memory with the simulator's own chunking).
EVAL_BATCH = 64


def vote(logits: torch.Tensor) -> torch.Tensor:
    """Majority vote of ``(3, B, C)`` logits -> ``(B,)`` int64 (summed-logit argmax when all differ)."""
    if logits.dim() != 3 or logits.shape[0] != 3:
        raise ValueError(f"vote needs (3, B, C) logits, got shape {tuple(logits.shape)}")
    a = logits.argmax(-1)  # (3, B)
    fallback = logits.sum(0).argmax(-1)
    out = torch.where(a[0] == a[1], a[0], torch.where(a[0] == a[2], a[0], torch.where(a[1] == a[2], a[1], fallback)))
    return out


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = EVAL_BATCH, progress: bool = False,
            desc: str = "eval") -> torch.Tensor:
    """Predicted classes ``(n,)`` int64 of images ``x (n, C, H, W)`` in the model's current mode."""
    from tqdm import tqdm

    model.eval()
    preds = []
    for i in tqdm(range(0, len(x), batch), desc=desc, disable=not (progress and sys.stderr.isatty()), leave=False):
        logits = model(x[i:i + batch])
        preds.append(vote(logits) if logits.dim() == 3 else logits.argmax(-1))
    return torch.cat(preds)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: CrossbarConfig | None = None,
             noise: NoiseConfig | None = None, seeds: tuple[int, ...] = (0,), vote_copies: int = 1,
             progress: bool = False) -> dict:
    """Top-1 (%) of ``model`` on ``x (n, C, H, W)``, ``y (n,)``.

    Args:
        cfg: None evaluates the plain int8 model (``qat`` mode); else the crossbar simulator.
        noise: the noise model (None: ideal chips; then one seed suffices and is used).
        seeds: one simulated chip per seed.
        vote_copies: 3 for ReSNA's majority vote on the last layer.

    Returns:
        ``{"top1": [per seed], "top1_mean", "top1_std" (sample std, 0 for one seed), "clip_rate":
        per slice, "zero_slice_ratio": per slice, "images"}``.
    """
    if len(x) != len(y):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    layers = crossbar_layers(model)
    modes = [layer.mode for _, layer in layers]
    result: dict = {"images": len(y)}
    try:
        if cfg is None:
            set_mode(model, "qat")
            accs = [100.0 * float((predict(model, x, progress=progress, desc="int8") == y).double().mean())]
        else:
            if noise is None:
                seeds = seeds[:1]
            accs = []
            stats = ReadStats()
            for seed in seeds:
                sessions = attach(model, cfg, noise, seed=seed, vote_copies=vote_copies)
                set_mode(model, "crossbar")
                pred = predict(model, x, progress=progress, desc=f"crossbar seed {seed}")
                accs.append(100.0 * float((pred == y).double().mean()))
                for s in sessions:
                    stats.add(s.stats.conversions, s.stats.clipped)
            result["clip_rate"] = stats.clip_rate()
            result["zero_slice_ratio"] = zero_slice_ratios(model, cfg)
    finally:
        detach_sessions(model)
        for (_, layer), mode in zip(layers, modes, strict=True):
            layer.mode = mode
    mean = sum(accs) / len(accs)
    std = math.sqrt(sum((a - mean) ** 2 for a in accs) / (len(accs) - 1)) if len(accs) > 1 else 0.0
    result.update(top1=accs, top1_mean=mean, top1_std=std)
    return result
