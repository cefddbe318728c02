# amaranth: UnusedElaboratable=no
# (tiles built only to read their timing properties are never elaborated)
"""`vitforge rtl report --crossbar`: Yosys resources of the crossbar tile (a tiny tile; the default one deep)."""

from __future__ import annotations

import json

import pytest

from vitforge.cli import main
from vitforge.hw.crossbar import CrossbarTile
from vitforge.hw.synth import RESOURCES, crossbar_report
from vitforge.quant.crossbar import CrossbarConfig

#: Four columns sharing two ADCs.
TINY = CrossbarConfig(rows=4, cols=4, cell_bits=2, dac_bits=2, adc_bits=(1, 3, 3, 3), cols_per_adc=2)


def cell_bits(cfg: CrossbarConfig) -> int:
    """Flip-flops the design must hold at least: every cell's sign and padded magnitude."""
    return cfg.rows * cfg.cols * (cfg.n_slices * cfg.cell_bits + 1)


def test_tiny_tile_report(capsys):
    result = crossbar_report(TINY)
    tile = CrossbarTile(config=TINY)
    assert result["dsp"] == TINY.n_adcs  # one noise multiplier (16 x 11 bits) per ADC; the cell products are LUTs
    assert result["ff"] >= cell_bits(TINY)
    assert result["lut"] > 0 and result["bram36"] == 0
    assert result["timing"] == {"latency": tile.latency, "interval": tile.interval,
                                "conversion_cycles": tile.conversion_cycles, "load_cycles": tile.load_cycles}
    assert result["device"]["fits"] and CrossbarConfig.from_dict(result["config"]) == TINY
    assert main(["rtl", "report", "--crossbar", json.dumps(TINY.to_dict()), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert {r: printed[r] for r in RESOURCES} == {r: result[r] for r in RESOURCES}  # from the cache: equal


@pytest.mark.slow
def test_default_tile_report(capsys):
    cfg = CrossbarConfig()
    result = crossbar_report(cfg)
    assert result["dsp"] == cfg.n_adcs and result["ff"] >= cell_bits(cfg) and result["device"]["fits"]
    assert main(["rtl", "report", "--crossbar"]) == 0
    out = capsys.readouterr().out
    assert "crossbar_tile 32x32, c=2, d=1" in out and f"latency {CrossbarTile(config=cfg).latency} cycles" in out
