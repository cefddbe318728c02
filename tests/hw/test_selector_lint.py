"""The token selector's generated Verilog passes `verilator --lint-only -Wall` (hw/verilog.py's waivers)."""

from __future__ import annotations

import pytest

from vitforge.hw.config import get_preset
from vitforge.hw.selector import TokenMean, TokenSelector
from vitforge.hw.verilog import HEADER, generate, lint

pytestmark = pytest.mark.rtl

DESIGNS = {
    "token_selector": lambda cfg: TokenSelector(heads=cfg.max_heads, max_tokens=cfg.max_tokens,
                                                max_dim=cfg.max_embed_dim),
    "token_mean": lambda cfg: TokenMean(max_len=cfg.max_tokens),
}


@pytest.mark.parametrize("name", sorted(DESIGNS))
def test_selector_lint_clean(name: str, tmp_path) -> None:
    text = generate(DESIGNS[name](get_preset("demo")), name)
    assert text.splitlines()[0] == HEADER
    path = tmp_path / f"{name}.v"
    path.write_text(text)
    result = lint(path, name)
    assert result.returncode == 0, f"verilator lint of {name} failed:\n{result.stderr[-4000:]}"
