"""`vitforge coopt`: run with --json and a plot, compare's summary, bad input with exit code 2."""

from __future__ import annotations

import json

import pytest

from vitforge.cli import main


def test_run_prints_json_and_writes_state_and_plot(tmp_path, capsys):
    rc = main(["coopt", "run", "--problem", "momf-park", "--method", "random", "--budget", "15", "--seed", "1",
               "--out", str(tmp_path / "r"), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method"] == "random" and out["spent"] >= 15 and out["top_fidelity_evaluations"] == out["evaluations"]
    assert (tmp_path / "r" / "state.json").exists() and (tmp_path / "r" / "hv_vs_cost.png").exists()
    assert main(["coopt", "resume", str(tmp_path / "r"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["evaluations"] == out["evaluations"]


@pytest.mark.parametrize("argv, message", [
    (["--problem", "nope", "--method", "random", "--budget", "3"], "unknown problem 'nope'"),
    (["--problem", "momf-park", "--method", "sa", "--budget", "3"], "unknown method 'sa'"),
    (["--problem", "momf-park", "--method", "random", "--budget", "0"], "budget must be a positive number"),
])
def test_bad_input_exits_2_naming_the_value(tmp_path, capsys, argv, message):
    assert main(["coopt", "run", *argv, "--out", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err


def test_compare_writes_summary_and_plots(tmp_path, capsys):
    out = tmp_path / "c"
    rc = main(["coopt", "compare", "--problem", "momf-branin-currin", "--methods", "nsga2", "random", "--seeds", "2",
               "--budget", "16", "--method-budget", "random=8", "--out", str(out), "--json"])
    assert rc == 0
    methods = json.loads(capsys.readouterr().out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reference_hv"] == pytest.approx(0.5235514, abs=1e-7)
    assert methods["nsga2"]["cost_ratio_to_nsga2_best"]["median"] == 1.0
    assert methods["random"]["budget"] == 8 and all(s >= 8 for s in methods["random"]["spent"])
    pooled = methods["nsga2"]["cost_to_90pct_of_pooled"]
    assert pooled["n"] == 2 and 0 <= pooled["reached"] <= 1
    # The pooled best is some run's final hypervolume: that run reaches 95% of it within its budget.
    assert max(methods[m]["cost_to_95pct_of_pooled"]["reached"] for m in ("nsga2", "random")) > 0
    assert (out / "hv_vs_cost.png").stat().st_size > 0 and (out / "pareto.png").stat().st_size > 0
    # A second compare reuses the finished runs; another budget for them is refused.
    assert main(["coopt", "compare", "--problem", "momf-branin-currin", "--methods", "nsga2", "--seeds", "2",
                 "--budget", "16", "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    assert main(["coopt", "compare", "--problem", "momf-branin-currin", "--methods", "nsga2", "--seeds", "1",
                 "--budget", "20", "--out", str(out)]) == 2
    assert "holds a run with" in capsys.readouterr().err
