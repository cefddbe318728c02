"""`vitforge rtl generate` and the `rtl` parser registration, through vitforge.cli.main."""

from __future__ import annotations

import argparse

import pytest

from vitforge.cli import main
from vitforge.hw import cli as hw_cli
from vitforge.hw.verilog import HEADER


def test_generate_writes_every_block(tmp_path, capsys):
    assert main(["rtl", "generate", "--preset", "demo", "--out", str(tmp_path)]) == 0
    names = sorted(p.stem for p in tmp_path.glob("*.v"))
    assert {"encoder_top", "axi_top", "gemm_sequencer", "gemm_engine", "selector", "softmax", "layernorm"} <= set(names)
    assert "module axi_top(" in (tmp_path / "axi_top.v").read_text()
    top = (tmp_path / "encoder_top.v").read_text()
    assert top.splitlines()[0] == HEADER
    assert "module encoder_top(" in top
    assert str(tmp_path / "encoder_top.v") in capsys.readouterr().out


def test_generate_refuses_unknown_preset(tmp_path, capsys):
    assert main(["rtl", "generate", "--preset", "nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown hardware preset 'nope'" in err and "demo" in err and "zcu102" in err
    assert not list(tmp_path.glob("*.v"))


def test_register_adds_rtl_with_its_actions():
    parser = argparse.ArgumentParser(prog="x")
    hw_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["rtl", "report", "--preset", "zcu102", "--json"])
    assert (args.command, args.rtl_command, args.preset, args.json) == ("rtl", "report", "zcu102", True)
    assert args.func is hw_cli.run_report
    args = parser.parse_args(["rtl", "generate", "--out", "d"])
    assert args.func is hw_cli.run_generate and args.preset == "demo"
    with pytest.raises(SystemExit):
        parser.parse_args(["rtl"])  # an action is required
