"""Token selector RTL vs quant.selector through cocotb: demo on Verilator and Icarus, a zcu102 smoke run."""

from __future__ import annotations

import pytest

from vitforge.hw.config import get_preset
from vitforge.sim.benches.runner import run_bench, simulators
from vitforge.sim.benches.tops import SelectorTop
from vitforge.tools import env_int

pytestmark = pytest.mark.rtl


@pytest.mark.parametrize("sim", simulators())
def test_token_selector_demo(sim: str) -> None:
    cfg = get_preset("demo")
    run_bench(name="selector_top", design=lambda: SelectorTop(config=cfg), key=cfg,
              bench="vitforge.sim.benches.selector", sim=sim,
              params={"config": cfg.to_json(), "images": env_int("VITFORGE_IMAGES", 4), "seed": 17})


@pytest.mark.parametrize("sim", [s for s in simulators() if s == "verilator"])
def test_token_selector_zcu102_smoke(sim: str) -> None:
    cfg = get_preset("zcu102")
    run_bench(name="selector_top", design=lambda: SelectorTop(config=cfg), key=cfg,
              bench="vitforge.sim.benches.selector", sim=sim,
              params={"config": cfg.to_json(), "images": env_int("VITFORGE_IMAGES", 1), "seed": 18})
