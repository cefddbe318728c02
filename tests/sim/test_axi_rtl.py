"""The board-level top (hw/axi.py AxiTop) through cocotb with cocotbext-axi's AXI4-Lite master and
AXI4 RAM (sim/benches/axi.py): the register file, and an encoder block with a selector run from a
program and an input stream in the RAM, bit for bit against sim/block_ref (Icarus runs the block
with VITFORGE_DEEP=1). Whole models through the same top: tests/sw/test_runtime.py."""

from __future__ import annotations

import pytest

from vitforge.hw.axi import AxiTop
from vitforge.hw.config import get_preset
from vitforge.sim.benches.runner import run_bench, simulators, slow_on_icarus

pytestmark = pytest.mark.rtl

DEMO = get_preset("demo")


def _run(sim: str, testcase: str, **params) -> None:
    run_bench(name="axi_top", design=lambda: AxiTop(config=DEMO), key=DEMO, bench="vitforge.sim.benches.axi",
              sim=sim, testcase=testcase, params={"config": DEMO.to_json(), "test": testcase, **params})


@pytest.mark.parametrize("sim", simulators())
def test_registers(sim):
    _run(sim, "registers")


@pytest.mark.parametrize("sim", slow_on_icarus(simulators()))
def test_block_through_axi(sim):
    """On Icarus this takes minutes: deep tier only (its registers test runs in the default tier)."""
    _run(sim, "block", n_tokens=17, seed=21, extra_beats=0)


def test_block_with_extra_input_beats():
    _run("verilator", "block", n_tokens=9, seed=22, extra_beats=5)
