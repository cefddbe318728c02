"""`vitforge rtl report` (Yosys synth_xilinx with plain-abc LUT mapping) on the demo preset.

Synthesis of the demo preset takes minutes on the CI machines (more than the 60 s budget of
the default tier): it runs with ``VITFORGE_DEEP=1``. The script test below is cheap.
"""

from __future__ import annotations

import json
import os

import pytest

from vitforge.cli import main
from vitforge.hw.synth import summarize, synth_script

DEEP = bool(os.environ.get("VITFORGE_DEEP"))


def test_script_avoids_abc9():
    script = synth_script("x")
    assert "abc9" not in script.replace("-run begin:map_luts", "")
    assert "-run begin:map_luts" in script and "abc -luts" in script


def test_summarize_counts_cells():
    cells = {"LUT6": 3, "LUT2": 1, "RAM64M": 2, "FDRE": 5, "DSP48E2": 7, "RAMB36E2": 1, "RAMB18E2": 3}
    assert summarize(cells) == {"dsp": 7, "lut": 6, "ff": 5, "bram36": 3}


@pytest.mark.skipif(not DEEP, reason="demo synthesis takes minutes: VITFORGE_DEEP=1")
def test_report_demo(capsys):
    assert main(["rtl", "report", "--preset", "demo", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("dsp", "lut", "ff", "bram36", "per_block"):
        assert key in result
    assert result["dsp"] > 0 and result["lut"] > 0 and result["ff"] > 0
    assert {"gemm_engine", "requant", "gemm_sequencer", "encoder_top", "controller_and_memories"} <= set(
        result["per_block"])
