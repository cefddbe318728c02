"""Throughput of the crossbar simulator against plain int8 evaluation of the same model."""

from __future__ import annotations

import time

import torch
from torch import nn

from vitforge.quant.crossbar.config import CrossbarConfig

from .device import NoiseConfig
from .layers import attach, calibrate, detach_sessions, set_mode


@torch.no_grad()
def images_per_second(model: nn.Module, x: torch.Tensor, cfg: CrossbarConfig | None, noise: NoiseConfig | None,
                      batch: int = 32, seed: int = 0) -> float:
    """Images per second of ``model`` on ``x (n, C, H, W)``: int8 (``cfg=None``) or on a simulated chip."""
    model.eval()
    if cfg is None:
        set_mode(model, "qat")
    else:
        attach(model, cfg, noise, seed=seed)
        set_mode(model, "crossbar")
    start = time.perf_counter()
    for i in range(0, len(x), batch):
        model(x[i:i + batch])
    seconds = time.perf_counter() - start
    detach_sessions(model)
    set_mode(model, "qat")
    return len(x) / seconds


def bench_model(model: nn.Module, calib: torch.Tensor, x: torch.Tensor, cfg: CrossbarConfig,
                noise: NoiseConfig) -> dict:
    """``{"int8_images_per_s", "crossbar_images_per_s", "ratio"}`` (ratio: int8 over crossbar)."""
    calibrate(model, calib)
    int8 = images_per_second(model, x, None, None)
    xbar = images_per_second(model, x, cfg, noise)
    return {"int8_images_per_s": int8, "crossbar_images_per_s": xbar, "slowdown": int8 / xbar}
