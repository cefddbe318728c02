"""NeuroSim-style costs: the cited ADC models and the per-tile / per-network bookkeeping."""

from __future__ import annotations

import pytest
import torch

from vitforge.quant.crossbar import CrossbarConfig
from vitforge.sw.reram.cost import (
    ISAAC_ADC_AREA_UM2,
    layer_geometry,
    network_cost,
    sar_area_um2,
    sar_energy_pj,
    sar_latency_ns,
    tile_cost,
)
from vitforge.sw.reram.device import OperatingPoint
from vitforge.sw.reram.models import ModelConfig
from vitforge.sw.reram.train import init_model


def test_sar_adc_models():
    assert sar_area_um2(8) == pytest.approx(ISAAC_ADC_AREA_UM2)
    steps = [sar_area_um2(n + 1) - sar_area_um2(n) for n in range(1, 8)]
    assert max(steps) == pytest.approx(min(steps))  # linear in bits
    assert [sar_latency_ns(n) for n in (1, 3, 8)] == [2.0, 4.0, 9.0]
    assert sar_energy_pj(4) == pytest.approx((1.0157 * 4 + 7.6286) * 5 * 1e-3)
    assert sar_energy_pj(4, 400.0) == pytest.approx(sar_energy_pj(4) * (1 + 1.3e-3 * 100))


def test_sharing_adcs_multiplies_latency_not_energy():
    one = tile_cost(CrossbarConfig(cols_per_adc=1, adc_bits=4))
    four = tile_cost(CrossbarConfig(cols_per_adc=4, adc_bits=4))
    assert four.latency_ns["adc"] == pytest.approx(4 * one.latency_ns["adc"])
    assert four.energy_pj["adc"] == pytest.approx(one.energy_pj["adc"])
    assert four.area_um2["adc"] == pytest.approx(one.area_um2["adc"] / 4)


def test_one_bit_msb_adc_is_cheaper():
    low = tile_cost(CrossbarConfig(adc_bits=(3, 3, 3, 1)))
    full = tile_cost(CrossbarConfig())  # lossless: 7 bits at 32 rows, c = 2, d = 1
    for key in ("area_um2", "energy_pj", "latency_ns"):
        assert getattr(low, key)["adc"] < getattr(full, key)["adc"]


def test_network_cost_counts_tiles_and_vectors():
    model = init_model(ModelConfig(channels=2, image_size=8), 0)
    geo = layer_geometry(model, (1, 8, 8))
    assert geo[0] == {"layer": "conv", "k": 9, "m": 2, "vectors": 64}
    assert geo[-1]["layer"] == "fc" and geo[-1]["vectors"] == 1
    cfg = CrossbarConfig(rows=8, cols=4)
    net = network_cost(geo, cfg, OperatingPoint())
    assert net["layers"][0]["tiles"] == 2  # ceil(9 / 8) x ceil(2 / 4)
    t = tile_cost(cfg)
    assert net["total"]["energy_pj"]["adc"] == pytest.approx(
        sum(r["tiles"] * r["vectors"] * t.energy_pj["adc"] for r in net["layers"]))
    assert torch.is_tensor(model.conv.weight)  # the forward left the model usable


def test_bad_activity_is_refused():
    with pytest.raises(ValueError, match="input_activity must be in"):
        tile_cost(CrossbarConfig(), input_activity=2.0)
