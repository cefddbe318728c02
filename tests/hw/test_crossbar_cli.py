"""`vitforge rtl generate --crossbar` / `rtl report --crossbar`: the crossbar tile in the rtl commands."""

from __future__ import annotations

import argparse
import json

import pytest

from vitforge.cli import main
from vitforge.hw import cli as hw_cli
from vitforge.hw.verilog import HEADER
from vitforge.quant.crossbar import CrossbarConfig

TINY = {"rows": 4, "cols": 2, "cell_bits": 2, "dac_bits": 2, "adc_bits": [1, 3, 3, 3], "adc_mode": "scaled"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="x")
    hw_cli.register(p.add_subparsers(dest="command"))
    return p


def test_crossbar_option_parses_config_fields():
    args = parser().parse_args(["rtl", "generate", "--out", "d", "--crossbar", json.dumps(TINY)])
    assert args.crossbar == CrossbarConfig(rows=4, cols=2, cell_bits=2, dac_bits=2, adc_bits=(1, 3, 3, 3),
                                           adc_mode="scaled")
    assert parser().parse_args(["rtl", "generate", "--out", "d"]).crossbar is None
    args = parser().parse_args(["rtl", "report", "--crossbar"])
    assert args.crossbar == CrossbarConfig() and args.func is hw_cli.run_report
    assert parser().parse_args(["rtl", "report"]).crossbar is None  # the encoder_top report stays the default


@pytest.mark.parametrize(("text", "message"), [
    ('{"cell_bits": 9}', "cell_bits must be an integer in 1..7, not 9"),
    ('{"rows": 0}', "rows must be a positive integer, not 0"),
    ('{"adc_mode": "log"}', "adc_mode must be one of ('saturate', 'scaled'), not 'log'"),
    ('{"bogus": 1}', "unknown CrossbarConfig field(s) ['bogus']"),
    ("[1, 2]", "--crossbar must be a JSON object, not '[1, 2]'"),
    ("{rows: 4}", "--crossbar must be a JSON object of CrossbarConfig fields"),
])
def test_bad_crossbar_config_is_refused(text, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["rtl", "generate", "--out", str(tmp_path), "--crossbar", text])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.glob("*.v"))


def test_blocks_include_the_crossbar_tile(tmp_path, capsys):
    tile = hw_cli.crossbar_block(CrossbarConfig.from_dict(TINY))
    assert tile.splitlines()[0] == HEADER
    assert "module crossbar_tile(" in tile
    for port in ("weights__payload", "input__payload", "output__payload", "noise_seed", "noise_sigma", "reseed"):
        assert port in tile
