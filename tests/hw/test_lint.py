"""Generated Verilog passes `verilator --lint-only -Wall` with only the documented waivers."""

from __future__ import annotations

import pytest

from vitforge.hw.axi import AxiTop
from vitforge.hw.config import get_preset
from vitforge.hw.controller import Controller
from vitforge.hw.crossbar import CrossbarTile
from vitforge.hw.gemm import GemmEngine, GemmSequencer
from vitforge.hw.nonlinear import GeluUnit, LayerNormUnit, SigmoidUnit, SoftmaxUnit
from vitforge.hw.residual import ResidualAdder
from vitforge.hw.selector import TokenMean, TokenSelector
from vitforge.hw.top import EncoderTop
from vitforge.hw.verilog import HEADER, LINT_WAIVERS, generate, lint
from vitforge.quant.crossbar import CrossbarConfig

pytestmark = pytest.mark.rtl

#: Every block, built from the demo config.
DESIGNS = {
    "gemm_engine": lambda cfg: GemmEngine(config=cfg),
    "gemm_sequencer": lambda cfg: GemmSequencer(config=cfg),
    "residual": lambda cfg: ResidualAdder(config=cfg),
    "controller": lambda cfg: Controller(config=cfg),
    "encoder_top": lambda cfg: EncoderTop(config=cfg),
    "axi_top": lambda cfg: AxiTop(config=cfg),
    "gelu_unit": lambda cfg: GeluUnit(numerics=cfg.numerics),
    "sigmoid_unit": lambda cfg: SigmoidUnit(numerics=cfg.numerics),
    "softmax_unit": lambda cfg: SoftmaxUnit(numerics=cfg.numerics, max_len=cfg.max_tokens),
    "layernorm_unit": lambda cfg: LayerNormUnit(numerics=cfg.numerics, max_dim=cfg.max_embed_dim),
    "token_selector": lambda cfg: TokenSelector(heads=cfg.max_heads, max_tokens=cfg.max_tokens,
                                                max_dim=cfg.max_embed_dim),
    "token_mean": lambda cfg: TokenMean(max_len=cfg.max_tokens),
    # the crossbar tiles do not depend on the HwConfig: the default tile (as `rtl generate` writes it),
    # and one with scaled per-slice ADCs shared by two columns each
    "crossbar_tile": lambda cfg: CrossbarTile(config=CrossbarConfig()),
    "crossbar_tile_shared": lambda cfg: CrossbarTile(config=CrossbarConfig(
        rows=8, cols=8, cell_bits=2, dac_bits=2, adc_bits=(1, 3, 3, 3), adc_mode="scaled", cols_per_adc=2)),
}


@pytest.mark.parametrize("name", sorted(DESIGNS))
def test_lint_clean(name, tmp_path):
    text = generate(DESIGNS[name](get_preset("demo")), name)
    assert text.splitlines()[0] == HEADER
    path = tmp_path / f"{name}.v"
    path.write_text(text)
    result = lint(path, name)
    assert result.returncode == 0, f"verilator lint of {name} failed:\n{result.stderr[-4000:]}"


def test_lint_catches_a_real_warning(tmp_path):
    """The waivers do not hide everything: an undriven output still fails."""
    path = tmp_path / "bad.v"
    path.write_text("module bad(input a, output b, output c);\n  assign b = a;\nendmodule\n")
    assert lint(path, "bad").returncode != 0
    assert all(reason for reason in LINT_WAIVERS.values())
