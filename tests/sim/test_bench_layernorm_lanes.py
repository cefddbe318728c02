"""The LayerNorm unit at 4 lanes (rows overlapping in the unit) vs quant.nonlinear through cocotb, on
Verilator and Icarus."""

from __future__ import annotations

import pytest

from vitforge.hw.config import get_preset
from vitforge.sim.benches.runner import run_bench, simulators
from vitforge.sim.benches.tops import LayerNormLanesTop
from vitforge.tools import env_int

pytestmark = pytest.mark.rtl


@pytest.mark.parametrize("sim", simulators())
def test_layernorm_lanes_demo_sizes(sim: str) -> None:
    cfg, lanes = get_preset("demo"), 4
    run_bench(name="layernorm_lanes_top", design=lambda: LayerNormLanesTop(config=cfg, lanes=lanes),
              key=(cfg, lanes), bench="vitforge.sim.benches.layernorm_lanes", sim=sim,
              params={"config": cfg.to_json(), "lanes": lanes, "rows": env_int("VITFORGE_ROWS", 6), "seed": 23})
