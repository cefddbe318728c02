"""`vitforge board build`: the project without Vivado (exit 3), with a stand-in Vivado that runs build.tcl
under the stubs (exit 0 and the JSON summary), with a failing one (exit 4 and its errors), and a
preset that does not fit (refused before anything is written)."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest

from vitforge.boards.cli import EXIT_NO_VIVADO, EXIT_VIVADO_FAILED
from vitforge.boards.zcu102 import project, tcl
from vitforge.cli import main
from vitforge.hw.config import get_preset

from .conftest import PRESET, write_runner

TCLSH = shutil.which("tclsh")


def _vivado(path, body: str):
    path.write_text("#!/bin/sh\n# vitforge test: plays vivado -mode batch -nojournal -log LOG -source TCL -tclargs N\n"
                    'while [ $# -gt 0 ]; do case "$1" in -log) log="$2"; shift;; esac; shift; done\n' + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def _build(out, *extra) -> list[str]:
    return ["board", "build", "--board", "zcu102", "--preset", PRESET, "--out", str(out), *extra]


def test_without_vivado_the_project_is_written_and_the_exit_code_says_so(tmp_path, monkeypatch, capsys,
                                                                         demo_files):
    monkeypatch.setenv("PATH", os.path.dirname(shutil.which("sh")))
    monkeypatch.delenv(project.VIVADO_ENV, raising=False)
    out = tmp_path / "zcu102"
    (out / "stale").mkdir(parents=True)  # replaced as a whole
    assert main(_build(out)) == EXIT_NO_VIVADO not in (0, 1, 2)
    cap = capsys.readouterr()
    assert "Vivado not found: no `vivado` on PATH and VIVADO is not set" in cap.err
    assert f"vitforge board build --board zcu102 --preset {PRESET} --out {out}" in cap.err
    summary = json.loads(cap.out)
    assert summary["vivado"] is None and summary["fit"]["device"]["fits"]
    assert not (out / "stale").exists()
    manifest = json.loads((out / project.MANIFEST_FILE).read_text())
    for rel, text in demo_files.items():
        assert (out / rel).read_text() == text
        assert manifest["files"][rel] == summary["files"][rel]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_a_preset_that_does_not_fit_is_refused_before_writing(tmp_path, capsys):
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"dsp": 10, "lut": 300_000, "ff": 10, "bram36": 1}))
    out = tmp_path / "zcu102"
    assert main(_build(out, "--report", str(report))) == 2
    assert "does not fit xczu9eg: lut +25,920 (300,000 of 274,080)" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.skipif(TCLSH is None, reason="tclsh not installed")
def test_with_vivado_the_products_and_timing_are_checked(tmp_path, monkeypatch, capsys, demo_files):
    out = tmp_path / "zcu102"
    runner = write_runner(demo_files, out, tmp_path / "runner.tcl", tmp_path / "calls.txt")
    monkeypatch.setenv(project.VIVADO_ENV, str(_vivado(tmp_path / "vivado", f'exec {TCLSH} {runner} > "$log" 2>&1\n')))
    assert main(_build(out, "--jobs", "2")) == 0
    cap = capsys.readouterr()
    summary = json.loads(cap.out)
    name = tcl.names(PRESET)["name"]
    assert summary["products"]["bit"]["path"] == str(out / tcl.PRODUCTS_DIR / f"{name}.bit")
    assert summary["products"]["hwh"]["path"] == str(out / tcl.PRODUCTS_DIR / f"{name}.hwh")
    assert len(summary["products"]["bit"]["sha256"]) == 64
    assert summary["wns_ns"] == 0.25
    assert summary["fmax_mhz"] == round(1000 / (1000 / get_preset(PRESET).clock_mhz - 0.25), 2)
    assert "vitforge: step 7/7: products" in (out / project.LOG_FILE).read_text()
    calls = (tmp_path / "calls.txt").read_text()
    assert "launch_runs\x1fimpl_1\x1f-to_step\x1fwrite_bitstream\x1f-jobs\x1f2" in calls


def test_a_vivado_error_prints_its_errors_and_the_log(tmp_path, monkeypatch, capsys):
    body = ('echo "vitforge: step 1/7: project" > "$log"\n'
            'echo "ERROR: [Synth 8-439] module \'vitforge_accel\' not found" >> "$log"\nexit 1\n')
    monkeypatch.setenv(project.VIVADO_ENV, str(_vivado(tmp_path / "vivado", body)))
    out = tmp_path / "zcu102"
    assert main(_build(out)) == EXIT_VIVADO_FAILED
    err = capsys.readouterr().err
    assert "Vivado exited with code 1" in err and "ERROR: [Synth 8-439] module 'vitforge_accel' not found" in err
    assert f"log: {out / project.LOG_FILE}" in err


def test_timing_not_met_fails(tmp_path):
    out = tmp_path / "p"
    (out / tcl.REPORTS_DIR).mkdir(parents=True)
    (out / tcl.PRODUCTS_DIR).mkdir()
    name = tcl.names(PRESET)["name"]
    for ext in ("bit", "hwh"):
        (out / tcl.PRODUCTS_DIR / f"{name}.{ext}").write_text("x")
    (out / tcl.REPORTS_DIR / tcl.TIMING_TXT).write_text("wns_ns -0.125\nperiod_ns 10.0\n")
    with pytest.raises(project.VivadoError, match=r"timing not met: WNS -0.125 ns at a 10.0 ns clock"):
        project.summarize(out, PRESET, out / project.LOG_FILE)
    (out / tcl.PRODUCTS_DIR / f"{name}.hwh").unlink()
    with pytest.raises(project.VivadoError, match=r"left no .*\.hwh"):
        project.summarize(out, PRESET, out / project.LOG_FILE)


def test_utilization_is_read_from_the_report():
    rpt = ("| CLB LUTs                   | 12345 |     0 |          0 |    274080 |  4.50 |\n"
           "| CLB Registers              |  6789 |     0 |          0 |    548160 |  1.24 |\n"
           "| Block RAM Tile    | 54.5 |     0 |          0 |       912 |  5.98 |\n"
           "| DSPs                       |   62 |     0 |          0 |      2520 |  2.46 |\n")
    assert project.parse_utilization(rpt) == {"lut": 12345, "ff": 6789, "dsp": 62, "bram36": 54.5}
