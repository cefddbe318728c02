"""Compute and latency models of a ViT with token selectors, and the selector schedule search.

A :class:`LatencyModel` maps a model config and per-block token counts to a latency. The
:class:`MacLatency` proxy counts multiply-accumulates and divides by a throughput (MACs per
second); a calibrated cycle model from the hardware side can replace it through the same
protocol. :func:`choose_schedule` picks selector positions and keep rates that meet a target.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .vit import ViTConfig

#: Default throughput of the MAC proxy: 2,520 DSPs x 2 int8 MACs at 300 MHz (ZCU102 peak).
ZCU102_PEAK_MACS_PER_S = 2520 * 2 * 300e6
#: Keep rates the schedule search tries (cumulative, per selector).
KEEP_GRID = (0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2)
MAX_SELECTORS = 3


def block_macs(cfg: ViTConfig, tokens: float) -> float:
    """MACs of one encoder block on ``tokens`` tokens (QKV, Q K^T, attn V, projection, MLP)."""
    d, m = cfg.embed_dim, cfg.mlp_dim
    return tokens * (3 * d * d + d * d + 2 * d * m) + 2 * tokens * tokens * d


def selector_macs(cfg: ViTConfig, tokens: float) -> float:
    """MACs of one token selector on ``tokens`` tokens (per-head MLPs and the head-weight MLP)."""
    h, dh = cfg.num_heads, cfg.head_dim
    hidden = max(1, h // 2)
    per_head = dh * dh + dh * (dh // 2) + (dh // 2) * (dh // 4) + (dh // 4) * 2
    return tokens * (h * per_head + h * hidden + hidden * h)


def tokens_per_block(cfg: ViTConfig, keep_rates: Sequence[float] | None = None) -> list[float]:
    """Tokens each block sees: kept fraction of the patches + class token + package tokens."""
    rates = list(cfg.keep_rates if keep_rates is None else keep_rates)
    n = cfg.num_patches
    counts, kept, packages = [], float(n), 0
    stage = 0
    for b in range(cfg.depth):
        if stage < len(cfg.selector_blocks) and cfg.selector_blocks[stage] == b:
            kept = n * rates[stage]
            packages = 1  # the previous package folds into the new one or stays as one token
            stage += 1
        counts.append(kept + 1 + packages)
    return counts


def model_macs(cfg: ViTConfig, tokens: Sequence[float] | None = None) -> float:
    """Total MACs for per-block token counts ``tokens`` (default: from ``cfg.keep_rates``).

    Selector costs use the token count of the block they precede's input (before pruning).
    """
    counts = list(tokens_per_block(cfg) if tokens is None else tokens)
    if len(counts) != cfg.depth:
        raise ValueError(f"need {cfg.depth} per-block token counts, got {len(counts)}")
    total = cfg.num_patches * cfg.in_chans * cfg.patch_size**2 * cfg.embed_dim
    total += sum(block_macs(cfg, t) for t in counts)
    for b in cfg.selector_blocks:
        total += selector_macs(cfg, counts[b - 1])
    total += cfg.embed_dim * cfg.num_classes
    return float(total)


@runtime_checkable
class LatencyModel(Protocol):
    """Latency of a model config at given per-block token counts."""

    def latency_ms(self, cfg: ViTConfig, tokens: Sequence[float]) -> float:
        ...


@dataclass(frozen=True)
class MacLatency:
    """MAC-count proxy: ``latency = MACs / macs_per_s``."""

    macs_per_s: float = ZCU102_PEAK_MACS_PER_S

    def __post_init__(self) -> None:
        if not self.macs_per_s > 0:
            raise ValueError(f"macs_per_s must be positive, not {self.macs_per_s!r}")

    def latency_ms(self, cfg: ViTConfig, tokens: Sequence[float]) -> float:
        return model_macs(cfg, tokens) / self.macs_per_s * 1e3


@dataclass(frozen=True)
class Schedule:
    """Chosen selector positions and cumulative keep rates, with the modeled latency."""

    selector_blocks: tuple[int, ...]
    keep_rates: tuple[float, ...]
    latency_ms: float
    dense_latency_ms: float


def choose_schedule(
    cfg: ViTConfig, target_ms: float, latency: LatencyModel | None = None, max_selectors: int = MAX_SELECTORS
) -> Schedule:
    """Selector positions and keep rates that meet ``target_ms`` with the least pruning.

    Searches 1..``max_selectors`` selectors at blocks ``1..depth-1`` with non-increasing keep
    rates from :data:`KEEP_GRID`; among schedules within the target it takes the one with the
    highest modeled latency (the most tokens kept), then the fewest selectors, then the latest
    first selector. Raises ``ValueError`` if none meets the target.
    """
    latency = latency or MacLatency()
    dense = latency.latency_ms(cfg, tokens_per_block(cfg.with_selectors((), ())))
    best: tuple | None = None
    for k in range(1, max_selectors + 1):
        for blocks in itertools.combinations(range(1, cfg.depth), k):
            for rates in itertools.combinations(sorted(KEEP_GRID, reverse=True), k):
                c = cfg.with_selectors(blocks, rates)
                ms = latency.latency_ms(c, tokens_per_block(c))
                if ms > target_ms:
                    continue
                key = (ms, -k, blocks[0], rates)
                if best is None or key > best[0]:
                    best = (key, Schedule(blocks, rates, ms, dense))
    if best is None:
        raise ValueError(
            f"no schedule of up to {max_selectors} selectors meets {target_ms:.6g} ms "
            f"(dense model: {dense:.6g} ms, keep rates down to {min(KEEP_GRID)})"
        )
    return best[1]


def target_from_reduction(cfg: ViTConfig, reduction: float, latency: LatencyModel | None = None) -> float:
    """The latency target (ms) that is ``reduction`` (0..1) below the dense model's."""
    if not 0 <= reduction < 1:
        raise ValueError(f"MAC/latency reduction must be in [0, 1), not {reduction!r}")
    latency = latency or MacLatency()
    return latency.latency_ms(cfg, tokens_per_block(cfg.with_selectors((), ()))) * (1 - reduction)
