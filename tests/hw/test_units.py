"""hw/units.py: one registry that the controller, rtl generate, the lint list, rtl report's split, the
cycle model and the runtime's budget read. A toy pass-through unit, registered here, shows up in each of
them without editing them."""

import dataclasses
from types import SimpleNamespace

import pytest
from amaranth.hdl import Fragment, signed

from vitforge.hw import timing, units
from vitforge.hw.cli import designs, lint_designs
from vitforge.hw.config import get_preset
from vitforge.hw.controller import Controller
from vitforge.hw.cycles import CycleModel
from vitforge.hw.isa import Op
from vitforge.hw.poly_unit import PipelineRegister
from vitforge.hw.synth import block_paths, expected_blocks
from vitforge.hw.verilog import generate

#: A free opcode (hw/isa.py's opcodes end at SELECT).
TOY_OP = max(Op) + 1


#: A toy streaming unit: a one-entry stream register passes every element through one cycle later.
TOY = units.Unit("toy_pass", lambda cfg: PipelineRegister(signed(8)), "stream", op=TOY_OP, submodule="toy_pass",
                 cycles=units.streaming(PipelineRegister.latency), budget=units.rowwise_budget)
DEMO = get_preset("demo")


def test_a_registered_unit_is_found_everywhere():
    with units.registered(TOY):
        assert "toy_pass" in designs(DEMO)  # rtl generate
        assert "toy_pass" in lint_designs(DEMO)  # the Verilator lint list
        assert block_paths()["toy_pass"] == "ctrl.toy_pass"  # rtl report's per-block split
        assert "toy_pass" in expected_blocks(DEMO)
        text = generate(designs(DEMO)["toy_pass"](), "toy_pass")
        assert "module toy_pass" in text
        # The cycle model times its instructions with the streaming formula and its latency.
        ins = SimpleNamespace(op=TOY_OP, rows=3, cols=8)
        assert CycleModel(DEMO).instr_cycles(ins, 0) == timing.streaming_cycles(DEMO, 3, 8, PipelineRegister.latency)
        # The controller builds it as its submodule of that name.
        frag = Fragment.get(Controller(config=DEMO), None)
        assert "toy_pass" in [name for _, name, _ in frag.subfragments]
    assert "toy_pass" not in designs(DEMO) and "toy_pass" not in block_paths()


def test_disabled_units_are_left_out():
    without = dataclasses.replace(DEMO, gelu=False, selector=False)
    names = {u.name for u in units.enabled(without)}
    assert "gelu" not in names and "selector" not in names and "softmax" in names
    assert "gelu" not in designs(without)


def test_registry_refuses_clashes_and_bad_entries():
    with pytest.raises(ValueError, match="called 'gelu' is registered already"):
        units.register(units.Unit("gelu", lambda cfg: PipelineRegister(signed(8)), "inner"))
    with pytest.raises(ValueError, match=f"opcode {int(Op.GELU)} is taken by unit 'gelu'"):
        units.register(units.Unit("gelu2", lambda cfg: PipelineRegister(signed(8)), "stream", op=Op.GELU, submodule="g",
                                  cycles=units.streaming(1), budget=units.rowwise_budget))
    with pytest.raises(ValueError, match="kind must be one of"):
        units.Unit("x", lambda cfg: PipelineRegister(signed(8)), "magic")
    with pytest.raises(ValueError, match="needs cycles, budget and submodule"):
        units.Unit("x", lambda cfg: PipelineRegister(signed(8)), "stream", op=TOY_OP)
    with pytest.raises(KeyError, match="no unit runs opcode"):
        units.by_op(TOY_OP)
