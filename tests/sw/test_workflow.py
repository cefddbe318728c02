"""train_to_dir's report, plots and the train command's flags (the tiny run of conftest.py)."""

from __future__ import annotations

import argparse
import json

import pytest

from vitforge.sw import cli
from vitforge.sw.train import BUDGET_FLAGS, TrainConfig


def test_report_names_the_split_the_stages_and_the_warnings(tiny_run, tiny_train):
    out, report = tiny_run
    assert report["val_images"] > 0 and report["train_images"] + report["val_images"] == tiny_train.max_train
    names = [s["name"] for s in report["stages"]]
    assert names == ["dense", "prune1", "prune2", "qat"]
    for st in report["stages"]:
        assert 0 < st["steps"] <= st["budget"] and st["history"]
        assert st["best_val_loss"] == min(h["val_loss"] for h in st["history"])
    # The tiny budgets end every stage while it still improves: each says so, naming its flag.
    unconverged = [s for s in report["stages"] if not s["converged"]]
    assert not report["converged"] and len(report["warnings"]) == len(unconverged) > 0
    for st, msg in zip(unconverged, report["warnings"], strict=True):
        assert f"stage {st['name']} did not converge" in msg
        assert BUDGET_FLAGS[st["name"].rstrip("0123456789")] in msg
    assert report["kernels"]["pinned"] and report["kernels"]["profile"] == "portable"
    assert (out / "plots" / "learning_curves.png").stat().st_size > 10_000
    assert json.loads((out / "timings.json").read_text())["seconds_per_stage"].keys() == {"dense", "prune", "qat"}


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    return parser.parse_args(["train", *argv])


def test_train_flags_are_the_python_api_fields(tmp_path):
    args = _parse("--out", str(tmp_path), "--dense-steps", "900", "--prune-steps", "50", "--qat-steps", "0",
                  "--patience", "5", "--lr", "0.001", "--prune-lr", "0.0002", "--qat-lr", "0.00001",
                  "--val-fraction", "0.2", "--eval-every", "30", "--seed", "4")
    tc = cli.train_config(args)
    assert tc == TrainConfig(seed=4, dense_steps=900, prune_steps=50, qat_steps=0, patience=5, lr=1e-3,
                             prune_lr=2e-4, qat_lr=1e-5, val_fraction=0.2, eval_every=30)


def test_epochs_flag_counts_passes_over_the_training_images(tmp_path):
    tc = cli.train_config(_parse("--out", str(tmp_path), "--epochs", "15"), n_train=6400)
    assert tc.dense_steps == 1500
    with pytest.raises(ValueError, match="--dense-steps or --epochs, not both"):
        cli.train_config(_parse("--out", str(tmp_path), "--epochs", "2", "--dense-steps", "9"), n_train=64)


def test_bad_flag_values_name_the_value(tmp_path):
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\), not 1.0"):
        cli.train_config(_parse("--out", str(tmp_path), "--val-fraction", "1"))
