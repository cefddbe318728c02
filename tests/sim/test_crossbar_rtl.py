"""Crossbar tile RTL (Verilator, Icarus) vs quant.crossbar.mvm through cocotb, noise off and on.

The tiles of a tier are built together (sim/bench_crossbar.TileGroup): one simulator build per tier.
"""

from __future__ import annotations

import pytest

from vitforge.quant.crossbar import CrossbarConfig
from vitforge.sim.benches.crossbar import TileGroup
from vitforge.sim.benches.runner import run_bench, simulators
from vitforge.tools import env_int

pytestmark = pytest.mark.rtl

#: The default tier's tiles: the issue's two shapes (c=2 d=1 lossless; c=1 d=2 with a 1-bit MSB-slice
#: ADC) and a scaled-mode tile with per-slice ADCs shared by two columns, at sizes that build quickly.
CONFIGS = {
    "16x8_c2_d1": CrossbarConfig(rows=16, cols=8, cell_bits=2, dac_bits=1),
    "16x8_c1_d2_msb1": CrossbarConfig(rows=16, cols=8, cell_bits=1, dac_bits=2, adc_bits=(3, 3, 3, 3, 3, 3, 1)),
    "8x8_c2_d2_scaled": CrossbarConfig(rows=8, cols=8, cell_bits=2, dac_bits=2, adc_bits=(1, 3, 3, 3),
                                       adc_mode="scaled", cols_per_adc=2),
}
#: The issue's sizes and a bigger scaled tile, for the deep tier (a 32x32 Verilator build took
#: over 10 minutes on the shared 2-core machine).
SLOW_CONFIGS = {
    "32x32_c2_d1": CrossbarConfig(rows=32, cols=32, cell_bits=2, dac_bits=1),
    "64x16_c1_d2_msb1": CrossbarConfig(rows=64, cols=16, cell_bits=1, dac_bits=2, adc_bits=(3, 3, 3, 3, 3, 3, 1)),
    "32x16_c4_d4_scaled": CrossbarConfig(rows=32, cols=16, cell_bits=4, dac_bits=4, adc_bits=6, adc_mode="scaled",
                                         cols_per_adc=8),
}
#: Noise runs of every bench: off, then two seeds at two sigmas.
NOISE_RUNS = [[0, 0.0], [0x1234ABCD, 1.5], [7, 6.0]]


def _run(name: str, configs: dict[str, CrossbarConfig], sim: str) -> None:
    """One build of all ``configs`` as a TileGroup, every tile checked by the bench."""
    tiles = tuple(configs.values())
    run_bench(name=name, design=lambda: TileGroup(configs=tiles), key=tiles,
              bench="vitforge.sim.benches.crossbar", sim=sim,
              params={"configs": [c.to_dict() for c in tiles], "vectors": env_int("VITFORGE_SAMPLES", 6),
                      "seed": 3, "noise": NOISE_RUNS})


@pytest.mark.parametrize("sim", simulators())
def test_crossbar_tiles_rtl(sim):
    _run("crossbar_tiles", CONFIGS, sim)


@pytest.mark.slow
@pytest.mark.parametrize("sim", simulators())
def test_crossbar_tiles_rtl_big(sim):
    _run("crossbar_tiles_big", SLOW_CONFIGS, sim)
