"""The nonlinear units' generated Verilog passes `verilator --lint-only -Wall` (hw/verilog.py's waivers)."""

from __future__ import annotations

import pytest

from vitforge.hw.config import get_preset
from vitforge.hw.nonlinear import GeluUnit, LayerNormUnit, SigmoidUnit, SoftmaxUnit
from vitforge.hw.verilog import HEADER, generate, lint

pytestmark = pytest.mark.rtl

DESIGNS = {
    "gelu_unit": lambda cfg: GeluUnit(numerics=cfg.numerics),
    "sigmoid_unit": lambda cfg: SigmoidUnit(numerics=cfg.numerics),
    "softmax_unit": lambda cfg: SoftmaxUnit(numerics=cfg.numerics, max_len=cfg.max_tokens),
    "layernorm_unit": lambda cfg: LayerNormUnit(numerics=cfg.numerics, max_dim=cfg.max_embed_dim),
}


@pytest.mark.parametrize("name", sorted(DESIGNS))
def test_nonlinear_lint_clean(name: str, tmp_path) -> None:
    text = generate(DESIGNS[name](get_preset("demo")), name)
    assert text.splitlines()[0] == HEADER
    path = tmp_path / f"{name}.v"
    path.write_text(text)
    result = lint(path, name)
    assert result.returncode == 0, f"verilator lint of {name} failed:\n{result.stderr[-4000:]}"
