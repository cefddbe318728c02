"""GEMM engine RTL (Verilator, Icarus) vs quant.ops.gemm through cocotb; a zcu102 smoke test."""

from __future__ import annotations

import dataclasses

import pytest

from vitforge.hw.config import get_preset
from vitforge.hw.gemm import GemmEngine
from vitforge.sim.benches.runner import run_bench, simulators
from vitforge.tools import env_int

pytestmark = pytest.mark.rtl


@pytest.mark.parametrize("sim", simulators())
def test_gemm_engine_demo(sim):
    cfg = get_preset("demo")
    run_bench(name="gemm_engine", design=lambda: GemmEngine(config=cfg), key=cfg, bench="vitforge.sim.benches.gemm",
              sim=sim, params={"config": cfg.to_json(), "tiles": env_int("VITFORGE_TILES", 24), "seed": 3})


@pytest.mark.parametrize("sim", simulators())
def test_gemm_engine_packed(sim):
    """Two MACs per multiplication (``dsp_packing``) on 3 rows: one packed pair and one row alone."""
    cfg = dataclasses.replace(get_preset("demo"), pe_rows=3, dsp_packing=True)
    run_bench(name="gemm_engine", design=lambda: GemmEngine(config=cfg), key=cfg, bench="vitforge.sim.benches.gemm",
              sim=sim, params={"config": cfg.to_json(), "tiles": env_int("VITFORGE_TILES", 24), "seed": 5})


@pytest.mark.slow  # the zcu102 top builds for minutes: VITFORGE_DEEP=1
def test_gemm_sequencer_zcu102_smoke():
    """A small ragged GEMM (and a Q K^T) through GemmSequencer inside the zcu102 top, on Verilator."""
    from vitforge.hw.top import EncoderTop

    cfg = get_preset("zcu102")
    cases = [{"m": 37, "k": 70, "n": 65, "b_trans": False, "b_act": False, "pad": 1, "saturate": False, "seed": 1},
             {"m": 33, "k": 64, "n": 40, "b_trans": True, "b_act": True, "pad": 0, "saturate": False, "seed": 2}]
    run_bench(name="encoder_top", design=lambda: EncoderTop(config=cfg), key=cfg, bench="vitforge.sim.benches.block",
              sim="verilator", testcase="gemm_programs", params={"config": cfg.to_json(), "gemm_cases": cases})


@pytest.mark.slow  # the 32x64 array builds for ~5 min: VITFORGE_DEEP=1
@pytest.mark.parametrize("sim", [s for s in simulators() if s == "verilator"])
def test_gemm_engine_zcu102_smoke(sim):
    """The 32x64 array of the zcu102 preset on a few tiles (measured: 354 s, mostly the C++ build)."""
    cfg = get_preset("zcu102")
    run_bench(name="gemm_engine", design=lambda: GemmEngine(config=cfg), key=cfg, bench="vitforge.sim.benches.gemm",
              sim=sim, params={"config": cfg.to_json(), "tiles": env_int("VITFORGE_TILES", 3), "seed": 4})
