"""The board-level top (hw/axi.py AxiTop) through cocotb with cocotbext-axi's AXI4-Lite master and
AXI4 RAM (sim/bench_axi.py): the register file, and an encoder block with a selector run from a
program and an input stream in the RAM, bit for bit against sim/block_ref (Icarus runs the block
with VITFORGE_DEEP=1). Whole models through the same top: tests/sw/test_runtime.py."""

from __future__ import annotations

import os

import pytest

from vitforge.hw.axi import AxiTop
from vitforge.hw.config import get_preset
from vitforge.sim.runner import run_bench, simulators

pytestmark = pytest.mark.rtl

DEMO = get_preset("demo")
DEEP = bool(os.environ.get("VITFORGE_DEEP"))


def _run(sim: str, testcase: str, **params) -> None:
    run_bench(name="axi_top", design=lambda: AxiTop(config=DEMO), key=DEMO, bench="vitforge.sim.bench_axi",
              sim=sim, testcase=testcase, params={"config": DEMO.to_json(), "test": testcase, **params})


@pytest.mark.parametrize("sim", simulators())
def test_registers(sim):
    _run(sim, "registers")


@pytest.mark.parametrize("sim", simulators())
def test_block_through_axi(sim):
    if sim == "icarus" and not DEEP:
        pytest.skip("the block through AXI runs on Icarus with VITFORGE_DEEP=1 (minutes); its registers test runs")
    _run(sim, "block", n_tokens=17, seed=21, extra_beats=0)


def test_block_with_extra_input_beats():
    _run("verilator", "block", n_tokens=9, seed=22, extra_beats=5)
