"""`vitforge approx`: the JSON report and the plot."""

import json

from vitforge.cli import main
from vitforge.quant.approx import APPROX_FUNCTIONS

KEYS = {"max_abs_err", "mean_abs_err", "ref_max_abs_err", "ref_mean_abs_err", "input_bits", "output_bits"}


def test_approx_json_has_every_function_and_key(capsys):
    assert main(["approx", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == set(APPROX_FUNCTIONS)
    for name in APPROX_FUNCTIONS:
        assert set(report[name]) == KEYS
        assert report[name]["max_abs_err"] <= report[name]["ref_max_abs_err"]


def test_approx_plot_is_written(tmp_path, capsys):
    png = tmp_path / "approx.png"
    assert main(["approx", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "gelu" in capsys.readouterr().out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "approx" in capsys.readouterr().out
