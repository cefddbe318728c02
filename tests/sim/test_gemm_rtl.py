"""GEMM engine RTL (Verilator, Icarus) vs quant.ops.gemm through cocotb."""

from __future__ import annotations

import pytest

from vitforge.hw.config import get_preset
from vitforge.hw.gemm import GemmEngine
from vitforge.sim.runner import env_int, run_bench, simulators

pytestmark = pytest.mark.rtl


@pytest.mark.parametrize("sim", simulators())
def test_gemm_engine_demo(sim):
    cfg = get_preset("demo")
    run_bench(name="gemm_engine", design=lambda: GemmEngine(config=cfg), key=cfg, bench="vitforge.sim.bench_gemm",
              sim=sim, params={"config": cfg.to_json(), "tiles": env_int("VITFORGE_TILES", 24), "seed": 3})
