"""Residual adder RTL (Verilator, Icarus) vs quant.ops.residual_add through cocotb."""

from __future__ import annotations

import pytest

from vitforge.hw.config import get_preset
from vitforge.hw.residual import ResidualAdder
from vitforge.sim.benches.runner import run_bench, simulators
from vitforge.tools import env_int

pytestmark = pytest.mark.rtl


@pytest.mark.parametrize("sim", simulators())
def test_residual_demo(sim):
    cfg = get_preset("demo")
    run_bench(name="residual", design=lambda: ResidualAdder(config=cfg), key=cfg,
              bench="vitforge.sim.benches.residual", sim=sim,
              params={"config": cfg.to_json(), "vectors": env_int("VITFORGE_SAMPLES", 12), "seed": 5})
