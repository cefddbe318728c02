"""Compute and latency models of a ViT with token selectors, and the selector schedule search.

A :class:`LatencyModel` maps a model config and per-block token counts to a latency.

* :class:`CycleLatency` (what ``vitforge train --latency-target-ms`` uses): the accelerator's
  cycles at a hardware preset's clock, from hw/cycles.py's RTL-calibrated cycle model run over
  the program hw/compiler.py compiles for the config's shapes (compiled once per shape and selector
  placement, with shape-only memory images; cycles memoized per token count).
* :class:`MacLatency`: a proxy that counts multiply-accumulates and divides by a throughput (MACs
  per second); ``--mac-reduction`` targets are stated in it.

:func:`choose_schedule` picks selector positions and keep rates that meet a target.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from vitforge.hw.config import MACS_PER_DSP, get_preset
from vitforge.hw.synth import DEVICES
from vitforge.quant.selector import head_weight_dims, scorer_dims

from .vit import ViTConfig

#: Default throughput of the MAC proxy: the ZCU102's peak, every DSP48E2 of the xczu9eg doing two int8
#: MACs (AMD WP486) at the zcu102 preset's clock.
ZCU102_PEAK_MACS_PER_S = DEVICES["xczu9eg"]["dsp"] * MACS_PER_DSP * get_preset("zcu102").clock_mhz * 1e6
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
    per_head = dh * dh + sum(a * z for a, z in itertools.pairwise(scorer_dims(dh)))
    return tokens * (h * per_head + sum(a * z for a, z in itertools.pairwise(head_weight_dims(h))))


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

    @property
    def label(self) -> str:
        return "MAC proxy"

    def latency_ms(self, cfg: ViTConfig, tokens: Sequence[float]) -> float:
        return model_macs(cfg, tokens) / self.macs_per_s * 1e3


def shape_program(cfg: ViTConfig, hw):
    """The program hw/compiler.py compiles for ``cfg`` on ``hw`` (a HwConfig), with zero memory images
    (the instruction stream depends only on the shapes; packing is vectorized, so this takes well under a
    second for DeiT-S)."""
    from .program import compile_program, zero_int_model

    return compile_program(zero_int_model(cfg, hw.numerics), hw)


def _shape_key(cfg: ViTConfig) -> tuple:
    return (cfg.image_size, cfg.patch_size, cfg.in_chans, cfg.num_classes, cfg.embed_dim, cfg.depth, cfg.num_heads,
            cfg.mlp_dim, cfg.selector_blocks)


@dataclass
class CycleLatency:
    """Latency from the RTL-calibrated cycle model (hw/cycles.py) at a hardware preset's clock.

    ``latency_ms(cfg, tokens)``: the program of ``cfg`` (compiled once per shape and selector
    placement) with the token count each selector leaves set to ``round(tokens[b])`` for the block
    ``b`` it precedes. Memory port: ``port`` (``"axi"``: hw/axi.py AxiTop, what the rtl backend and the
    board run; ``"stream"``: EncoderTop's ideal streams).

    Args:
        preset: hardware preset name (hw/config.py), or a HwConfig.
    """

    preset: object = "zcu102"
    port: str = "axi"
    _programs: dict = field(default_factory=dict, repr=False)
    _totals: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        from vitforge.hw.config import HwConfig, get_preset
        from vitforge.hw.cycles import CycleModel

        self.hw = self.preset if isinstance(self.preset, HwConfig) else get_preset(self.preset)
        self.model = CycleModel(self.hw, self.port)

    @property
    def clock_mhz(self) -> float:
        return float(self.hw.clock_mhz)

    @property
    def label(self) -> str:
        name = self.preset if isinstance(self.preset, str) else "custom"
        return f"cycle model, {name} @ {self.clock_mhz:g} MHz"

    def program(self, cfg: ViTConfig):
        """The compiled (shape-only) program of ``cfg`` (cached)."""
        key = _shape_key(cfg)
        if key not in self._programs:
            self._programs[key] = shape_program(cfg, self.hw)
        return self._programs[key]

    def select_tokens(self, cfg: ViTConfig, tokens: Sequence[float]) -> list[int]:
        """The token count each selector leaves: ``round(tokens[b])`` for each selector block ``b``, at
        most the tokens it sees (a selector that prunes nothing writes no package token)."""
        counts = list(tokens)
        if len(counts) != cfg.depth:
            raise ValueError(f"need {cfg.depth} per-block token counts, got {len(counts)}")
        kept, seen = [], cfg.num_patches + 1
        for b in cfg.selector_blocks:
            seen = min(seen, max(1, round(counts[b])))
            kept.append(seen)
        return kept

    def cycles(self, cfg: ViTConfig, tokens: Sequence[float]) -> dict:
        """:meth:`vitforge.hw.cycles.CycleModel.program_cycles` of ``cfg``'s program (per instruction and layer)."""
        return self.model.program_cycles(self.program(cfg), self.select_tokens(cfg, tokens))

    def total_cycles(self, cfg: ViTConfig, tokens: Sequence[float]) -> int:
        """Total cycles (the controller's and the loader's timelines of hw/cycles.py); memoized per
        shape and token counts."""
        kept = self.select_tokens(cfg, tokens)
        key = (_shape_key(cfg), tuple(kept))
        if key not in self._totals:
            self._totals[key] = self.model.program_cycles(self.program(cfg), kept)["total"]
        return self._totals[key]

    def latency_ms(self, cfg: ViTConfig, tokens: Sequence[float]) -> float:
        return self.total_cycles(cfg, tokens) / (self.clock_mhz * 1e3)


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
