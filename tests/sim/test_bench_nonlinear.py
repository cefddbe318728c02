"""Nonlinear units' RTL (Verilator, Icarus) vs quant.nonlinear through cocotb, demo preset."""

from __future__ import annotations

import pytest

from vitforge.hw.config import get_preset
from vitforge.sim.bench_nonlinear_cocotb import NonlinearTop
from vitforge.sim.runner import env_int, run_bench, simulators

pytestmark = pytest.mark.rtl

@pytest.mark.parametrize("sim", simulators())
def test_nonlinear_units_demo(sim: str) -> None:
    cfg = get_preset("demo")
    run_bench(name="nonlinear_top", design=lambda: NonlinearTop(config=cfg), key=cfg,
              bench="vitforge.sim.bench_nonlinear", sim=sim,
              params={"config": cfg.to_json(), "rows": env_int("VITFORGE_ROWS", 4), "seed": 17})
