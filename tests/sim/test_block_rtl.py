"""The accelerator top (hw/top.py) on Verilator and Icarus through cocotb (sim/benches/block.py).

* GEMM instructions from scratchpads (ragged M/N/K, strides, b_trans, b_act with and without its
  B in the operand cache, K=1, saturation) vs quant.ops.gemm, their cycles vs hw/cycles.py.
* One full demo encoder block behind a token selector vs sim/block_ref.reference, bit for bit,
  with about half the tokens kept; the corner cases (all kept, only the class token kept) run
  on Verilator, and on Icarus too with ``VITFORGE_DEEP=1``.
* The same block (selector, about half kept; and dense) with the row-wise units at one lane (BASE:
  ``demo`` before its ``unit_lanes = 2``) and at ``unit_lanes = 4`` (demo's lanes), on both
  simulators, with ``VITFORGE_DEEP=1`` (a design of its own each).
* A tiny build with ``fuse_gelu`` (the GELU in the GEMM drain path): fused and plain GEMMs, and an
  encoder block behind a selector whose fc1 and selector MLPs run fused, on both simulators.
"""

from __future__ import annotations

import dataclasses

import pytest

from vitforge.hw.config import BASE, get_preset
from vitforge.hw.top import EncoderTop
from vitforge.sim.benches.runner import run_bench, simulators, slow_on_icarus
from vitforge.tools import env_int

pytestmark = pytest.mark.rtl

DEMO = get_preset("demo")

GEMM_CASES = [
    {"m": 7, "k": 10, "n": 9, "b_trans": False, "b_act": False, "pad": 1, "saturate": False, "seed": 1},
    {"m": 9, "k": 8, "n": 9, "b_trans": True, "b_act": True, "pad": 1, "saturate": False, "seed": 2},
    {"m": 9, "k": 9, "n": 8, "b_trans": False, "b_act": True, "pad": 0, "saturate": False, "seed": 3},
    {"m": 5, "k": 1, "n": 6, "b_trans": False, "b_act": False, "pad": 0, "saturate": False, "seed": 4},
    {"m": 5, "k": 13, "n": 5, "b_trans": False, "b_act": False, "pad": 0, "saturate": True, "seed": 5},
    {"m": 6, "k": 5, "n": 7, "b_trans": True, "b_act": False, "pad": 2, "saturate": False, "seed": 6},
    # b_act with a B (12 x 12 blocks: 576 words) too big for half of demo's operand cache (512): A from it
    {"m": 9, "k": 48, "n": 45, "b_trans": True, "b_act": True, "pad": 1, "saturate": False, "seed": 7},
    # the demo's attention shapes: B (and, in the first M tile, A) from the operand cache
    {"m": 65, "k": 16, "n": 65, "b_trans": True, "b_act": True, "pad": 0, "saturate": False, "seed": 8},
    {"m": 65, "k": 65, "n": 16, "b_trans": False, "b_act": True, "pad": 0, "saturate": False, "seed": 9},
]


#: The demo preset with its row-wise units at 4 lanes (= lanes): one word per transfer.
DEMO_U4 = dataclasses.replace(DEMO, unit_lanes=4)
#: The row-wise units at one lane (one element a transfer, two bubbles a word read): demo's build otherwise.
DEMO_U1 = dataclasses.replace(DEMO, unit_lanes=1)


def test_the_one_lane_build_is_base():
    """demo differs from BASE only in its two lanes, so DEMO_U1 runs BASE's one-lane paths."""
    assert DEMO.unit_lanes == 2 and DEMO_U1 == BASE


def _run(sim: str, testcase: str, cfg=DEMO, **params) -> None:
    run_bench(name="encoder_top", design=lambda: EncoderTop(config=cfg), key=cfg, bench="vitforge.sim.benches.block",
              sim=sim, testcase=testcase, params={"config": cfg.to_json(), **params})


@pytest.mark.parametrize("sim", simulators())
def test_gemm_instructions(sim):
    _run(sim, "gemm_programs", gemm_cases=GEMM_CASES)


@pytest.mark.parametrize("sim", simulators())
def test_encoder_block_with_selector(sim):
    _run(sim, "encoder_block", n_tokens=env_int("VITFORGE_BLOCK_TOKENS", DEMO.max_tokens), seed=11,
         selector=True, keep="mixed")


@pytest.mark.parametrize("keep", ["all", "class_only"])
@pytest.mark.parametrize("sim", slow_on_icarus(simulators()))
def test_encoder_block_selector_corners(sim, keep):
    """Icarus runs these corners in the deep tier only (the mixed case runs on both)."""
    _run(sim, "encoder_block", n_tokens=env_int("VITFORGE_BLOCK_TOKENS", 17), seed=12, selector=True, keep=keep)


@pytest.mark.slow  # a build of its own per simulator (Verilator about 5 minutes, Icarus 9 for both cases)
@pytest.mark.parametrize("cfg", [DEMO_U1, DEMO_U4], ids=["u1", "u4"])
@pytest.mark.parametrize("selector", [True, False], ids=["selector", "dense"])
@pytest.mark.parametrize("sim", simulators())
def test_encoder_block_at_unit_lanes(sim, selector, cfg):
    _run(sim, "encoder_block", cfg=cfg, n_tokens=env_int("VITFORGE_BLOCK_TOKENS", DEMO.max_tokens), seed=13,
         selector=selector, keep="mixed")


#: A tiny build (D=16, 2 heads, MLP 32, 6 tokens) with the GELU fused into the GEMM drain path: a build
#: and run of about a minute per simulator.
FUSED_GELU = dataclasses.replace(DEMO, act_depth=4096, weight_depth=1024, param_depth=64, imem_depth=128,
                                 max_tokens=6, max_embed_dim=16, max_mlp_dim=32, max_heads=2, fuse_gelu=True)


@pytest.mark.parametrize("sim", simulators())
def test_fused_gelu_gemms_and_block(sim):
    cases = [{**c, "gelu": True} for c in GEMM_CASES] + GEMM_CASES[:2]
    _run(sim, "gemm_programs", cfg=FUSED_GELU, gemm_cases=cases)
    _run(sim, "encoder_block", cfg=FUSED_GELU, n_tokens=FUSED_GELU.max_tokens, seed=14, selector=True, keep="mixed")
