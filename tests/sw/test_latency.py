from __future__ import annotations

import pytest

from vitforge.sw.latency import (
    LatencyModel,
    MacLatency,
    choose_schedule,
    model_macs,
    target_from_reduction,
    tokens_per_block,
)
from vitforge.sw.vit import PRESETS


def test_mac_latency_is_a_latency_model():
    assert isinstance(MacLatency(), LatencyModel)
    with pytest.raises(ValueError, match="positive"):
        MacLatency(0.0)


def test_tokens_per_block():
    cfg = PRESETS["demo"].with_selectors((1, 3), (0.5, 0.25))
    assert tokens_per_block(cfg) == [65, 34, 34, 18]


@pytest.mark.parametrize("reduction", [0.2, 0.45, 0.55])
def test_schedule_meets_target_with_least_pruning(reduction):
    cfg = PRESETS["demo"]
    lat = MacLatency()
    target = target_from_reduction(cfg, reduction, lat)
    s = choose_schedule(cfg, target, lat)
    chosen = cfg.with_selectors(s.selector_blocks, s.keep_rates)
    assert s.latency_ms == pytest.approx(lat.latency_ms(chosen, tokens_per_block(chosen)))
    assert s.latency_ms <= target
    assert model_macs(chosen) <= (1 - reduction) * model_macs(cfg)


def test_schedule_infeasible():
    cfg = PRESETS["demo"]
    with pytest.raises(ValueError, match="no schedule"):
        choose_schedule(cfg, 1e-9)
