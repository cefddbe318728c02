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


def test_overlapped_loads_cycle_exact_through_axi(tmp_path):
    """A whole model whose weights and parameters load beside compute (``LOAD nowait``, ``SYNC``) on
    AxiTop (Verilator, sim/rtl.py's DDR): logits bit-exact with the golden model, and the cycle
    model's two timelines equal AxiTop's per-instruction profile, every instruction."""
    import torch

    from vitforge.hw.cycles import CycleModel
    from vitforge.hw.isa import Op
    from vitforge.sw import random_model
    from vitforge.sw.runtime import Runtime
    from vitforge.sw.vit import ViTConfig

    model = ViTConfig(image_size=16, patch_size=4, in_chans=1, num_classes=4, embed_dim=64, depth=3, num_heads=4,
                      mlp_ratio=2.0, selector_blocks=(1,), keep_rates=(0.5,))
    artifact = random_model.random_artifact(11, model, tmp_path / "artifact", "demo")
    with Runtime(artifact, "rtl") as rt:
        prog = rt.backend.prog.program
        overlapped = [i for i in prog.instrs if i.op == Op.LOAD and i.nowait]
        assert len(overlapped) >= 4 and any(i.op == Op.SYNC for i in prog.instrs)
        for seed in (11, 12):
            image = random_model.random_image(seed, model)
            got = rt.infer(image)
            logits, _, tokens = rt.golden.run(image)
            assert torch.equal(got.logits, logits)
            predicted = CycleModel(DEMO, "axi").program_cycles(prog, [tokens[1]])
            wrong = [(k, str(prog.instrs[k]), p, r) for k, (p, r) in
                     enumerate(zip(predicted["per_instr"], got.instr_cycles, strict=True)) if p != r]
            assert not wrong, wrong[:5]
            assert predicted["total"] == got.cycles
