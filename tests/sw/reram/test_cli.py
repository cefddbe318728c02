"""`vitforge reram`: cost, train and eval through the one entry point, JSON output, refused input."""

from __future__ import annotations

import json

import pytest

from vitforge.cli import main


def test_cost_json_per_component(capsys, tmp_path):
    png = tmp_path / "cost.png"
    assert main(["reram", "cost", "--model", "resnet20", "--channels", "2", "--adc-bits", "3,3,3,1",
                 "--cols-per-adc", "4", "--json", "--plot", str(png)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["tile"]["area_um2"]) == {"adc", "array"}
    assert out["crossbar"]["slice_adc_bits"] == [3, 3, 3, 1]
    assert out["network"]["tiles"] > 0 and png.stat().st_size > 0


@pytest.mark.parametrize(("args", "message"), [
    (["--temperature-k", "0"], "temperature_k must be > 0 K, not 0.0"),
    (["--frequency-mhz", "-5"], "frequency_hz must be > 0 Hz"),
    (["--prog-sigma", "-1"], "prog_sigma must be a finite number >= 0, not -1.0"),
    (["--cell-bits", "9"], "cell_bits must be an integer in 1..7, not 9"),
    (["--adc-mode", "log"], "adc_mode must be one of"),
])
def test_bad_input_is_refused_with_the_value(capsys, args, message):
    assert main(["reram", "cost", "--model", "none", *args]) == 2
    assert message in capsys.readouterr().err


def test_train_then_eval_under_noise(capsys, tmp_path, monkeypatch):
    import torch

    from vitforge.sw import data as data_module
    from vitforge.sw.data import ImageData

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(40, 1, 8, 8, generator=gen)
    y = torch.arange(40) % 10
    tiny = ImageData(x, y, x[:12].clone(), y[:12].clone(), tuple(str(i) for i in range(10)))
    monkeypatch.setattr(data_module, "load_data", lambda spec, seed=0, size=32: tiny)
    out = tmp_path / "run"
    assert main(["reram", "train", "--method", "bitslice-l1", "--channels", "2", "--out", str(out), "--epochs",
                 "0.5", "0.5", "0.5", "--max-train", "0", "--no-progress", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["zero_slice_ratio"]) == 4
    plots = tmp_path / "plots"
    assert main(["reram", "eval", "--checkpoint", str(out / "model.safetensors"), "--adc-bits", "3,3,3,1",
                 "--noise", "--seeds", "0", "1", "--sweep-op", "10:300", "1000:400", "--sweep-adc-bits", "2", "3",
                 "--plots", str(plots), "--json", "--no-progress"]) == 0
    res = json.loads(capsys.readouterr().out)
    r = res["results"][0]
    assert len(r["crossbar"]["top1"]) == 2 and len(r["crossbar"]["clip_rate"]) == 4
    assert set(r["op_sweep"]) == {"10 MHz / 300 K", "1000 MHz / 400 K"}
    assert sorted(p.rsplit("/", 1)[-1] for p in res["plots"]) == [
        "accuracy_vs_adc_bits.png", "accuracy_vs_operating_point.png", "zero_ratio.png"]


def _tiny_data(monkeypatch):
    import torch

    from vitforge.sw import data as data_module
    from vitforge.sw.data import ImageData

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(40, 1, 8, 8, generator=gen)
    y = torch.arange(40) % 10
    tiny = ImageData(x, y, x[:12].clone(), y[:12].clone(), tuple(str(i) for i in range(10)))
    monkeypatch.setattr(data_module, "load_data", lambda spec, seed=0, size=32: tiny)


def test_budgeted_training_evaluates_without_clipping(capsys, tmp_path, monkeypatch):
    _tiny_data(monkeypatch)
    out = tmp_path / "run"
    xbar = ["--rows", "8", "--adc-bits", "3,3,3,1"]
    assert main(["reram", "train", "--method", "bitslice-l1", "--channels", "2", "--out", str(out), "--epochs",
                 "0.5", "0.5", "0.5", "--max-train", "0", "--no-progress", "--json", "--adc-budget", "--snap", "1",
                 *xbar]) == 0
    capsys.readouterr()
    assert main(["reram", "eval", "--checkpoint", str(out / "model.safetensors"), *xbar, "--seeds", "0", "--json",
                 "--no-progress"]) == 0
    r = json.loads(capsys.readouterr().out)["results"][0]
    assert r["crossbar"]["top1"] == [r["int8"]] and max(r["crossbar"]["clip_rate"]) == 0.0


def test_a_budget_without_fine_tuning_is_refused(capsys, tmp_path):
    assert main(["reram", "train", "--method", "plain", "--out", str(tmp_path / "r"), "--adc-bits", "3",
                 "--adc-budget"]) == 2
    assert "adc_budget needs a fine-tuning method (l1, bitslice-l1), not 'plain'" in capsys.readouterr().err
