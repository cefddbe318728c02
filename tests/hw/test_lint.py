"""Generated Verilog passes `verilator --lint-only -Wall` with only the documented waivers."""

from __future__ import annotations

import pytest

from vitforge.hw.cli import lint_designs
from vitforge.hw.config import get_preset
from vitforge.hw.crossbar import CrossbarTile
from vitforge.hw.verilog import HEADER, LINT_WAIVERS, generate, lint
from vitforge.quant.crossbar import CrossbarConfig

pytestmark = pytest.mark.rtl

#: Every block (hw/units.py's units, the two tops, the default crossbar tile as `rtl generate` writes it, and
#: the controller), built from the demo config; and a crossbar tile with scaled per-slice ADCs shared by
#: two columns each (the tiles do not depend on the HwConfig).
DESIGNS = {
    **lint_designs(get_preset("demo")),
    "crossbar_tile_shared": lambda: CrossbarTile(config=CrossbarConfig(
        rows=8, cols=8, cell_bits=2, dac_bits=2, adc_bits=(1, 3, 3, 3), adc_mode="scaled", cols_per_adc=2)),
}


@pytest.mark.parametrize("name", sorted(DESIGNS))
def test_lint_clean(name, tmp_path):
    text = generate(DESIGNS[name](), name)
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
