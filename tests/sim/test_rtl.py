"""A whole model on the RTL (sim/rtl.py's Verilator device, AxiTop) with the row-wise units at
``unit_lanes = lanes``: the logits equal the golden model's, and the cycle model (AXI port) follows.

The model is tests/sw/test_runtime.py's small random integer ViT (17 tokens, D=64, a selector before
block 1) exported for a preset that exists only in this test: ``demo`` with ``unit_lanes = 4``.
The Verilator build of AxiTop at that config takes a few minutes (cached under build/rtl/).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vitforge.hw import config as hw_config
from vitforge.hw.cycles import CycleModel
from vitforge.sw import random_model
from vitforge.sw.runtime import Runtime, run_images
from vitforge.sw.vit import ViTConfig

pytestmark = pytest.mark.rtl

#: The test-only preset: demo's row-wise units at 4 lanes (one scratchpad word per transfer).
PRESET = "demo-u4"
CFG = dataclasses.replace(hw_config.get_preset("demo"), unit_lanes=4)
MODEL = ViTConfig(image_size=16, patch_size=4, in_chans=1, num_classes=4, embed_dim=64, depth=2, num_heads=4,
                  mlp_ratio=2.0, selector_blocks=(1,), keep_rates=(0.5,))
SEED = 7


@pytest.fixture
def preset(monkeypatch):
    monkeypatch.setitem(hw_config.PRESETS, PRESET, CFG)
    return PRESET


@pytest.mark.slow  # its own AxiTop build (minutes): VITFORGE_DEEP=1
def test_whole_model_at_unit_lanes_equals_golden(preset, tmp_path):
    artifact = random_model.random_artifact(SEED, MODEL, tmp_path / "artifact", preset)
    images = torch.stack([random_model.random_image(SEED + i, MODEL) for i in range(3)])
    rt = Runtime(artifact, "rtl")
    try:
        assert rt.hw.unit_lanes == 4
        res = run_images(rt, images, torch.tensor([0, 1, 2]))
        assert res["exact"] == 3, res["mismatches"]
        got = rt.infer(images[0])
        _, _, tokens = rt.golden.run(images[0])
        model = CycleModel(CFG, "axi").program_cycles(rt.backend.prog.program, [tokens[1]])
        for name, cycles in got.layer_cycles.items():
            assert model["per_layer"][name] == cycles, (name, model["per_layer"][name], cycles)
    finally:
        rt.close()
