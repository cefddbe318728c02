"""Nonlinear units' RTL vs quant.nonlinear through cocotb: demo on Verilator and Icarus, a zcu102 smoke run, the
softmax at unit_lanes = 4 (its pipelined rows) on both."""

from __future__ import annotations

import dataclasses

import pytest

from vitforge.hw.config import get_preset
from vitforge.sim.benches.runner import run_bench, simulators
from vitforge.sim.benches.tops import NonlinearTop, SoftmaxLanesTop
from vitforge.tools import env_int

pytestmark = pytest.mark.rtl


@pytest.mark.parametrize("sim", simulators())
def test_nonlinear_units_demo(sim: str) -> None:
    cfg = get_preset("demo")
    run_bench(name="nonlinear_top", design=lambda: NonlinearTop(config=cfg), key=cfg,
              bench="vitforge.sim.benches.nonlinear", sim=sim,
              params={"config": cfg.to_json(), "rows": env_int("VITFORGE_ROWS", 4), "seed": 17})


@pytest.mark.parametrize("sim", [s for s in simulators() if s == "verilator"])
def test_nonlinear_units_zcu102_smoke(sim: str) -> None:
    cfg = get_preset("zcu102")
    run_bench(name="nonlinear_top", design=lambda: NonlinearTop(config=cfg), key=cfg,
              bench="vitforge.sim.benches.nonlinear", sim=sim,
              params={"config": cfg.to_json(), "rows": env_int("VITFORGE_ROWS", 2), "seed": 18})


@pytest.mark.parametrize("sim", simulators())
def test_softmax_at_unit_lanes_4(sim: str) -> None:
    cfg = dataclasses.replace(get_preset("demo"), unit_lanes=4)
    run_bench(name="softmax_lanes_top", design=lambda: SoftmaxLanesTop(config=cfg), key=cfg,
              bench="vitforge.sim.benches.softmax_lanes", sim=sim,
              params={"config": cfg.to_json(), "rows": env_int("VITFORGE_ROWS", 8), "seed": 23})
