from __future__ import annotations

import argparse

import pytest

from vitforge.sw import cli


def _parser():
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    return parser


def test_train_arguments_reach_the_workflow(monkeypatch, tmp_path, capsys):
    from vitforge.sw import workflow

    seen = {}

    def fake_train(out, preset, seed, target, data, hw_preset, tc):
        seen.update(out=out, preset=preset, seed=seed, target=target, data=data, hw=hw_preset, tc=tc)
        return {"float_dense_acc": 1.0, "int8_pruned_acc": 1.0, "gmacs_dense": 2.0, "gmacs_pruned": 1.0,
                "keep_rates": [0.5], "selector_blocks": [1]}

    monkeypatch.setattr(workflow, "train_to_dir", fake_train)
    args = _parser().parse_args(["train", "--preset", "demo", "--out", str(tmp_path), "--seed", "3",
                                 "--mac-reduction", "0.4", "--no-progress"])
    assert args.func(args) == 0
    assert seen["seed"] == 3 and seen["tc"].seed == 3 and not seen["tc"].progress
    assert seen["target"].mac_reduction == 0.4 and seen["target"].latency_ms is None
    assert '"gmacs_pruned": 1.0' in capsys.readouterr().out


def test_train_targets_are_exclusive(tmp_path):
    with pytest.raises(SystemExit):
        _parser().parse_args(["train", "--out", str(tmp_path), "--latency-target-ms", "1", "--mac-reduction", "0.5"])
    with pytest.raises(SystemExit):
        _parser().parse_args(["train", "--out", str(tmp_path), "--latency-reduction", "0.4", "--mac-reduction", "0.5"])
    args = _parser().parse_args(["train", "--out", str(tmp_path), "--latency-reduction", "0.4"])
    assert args.latency_reduction == 0.4 and args.mac_reduction is None


def test_eval_refuses_missing_artifact(tmp_path):
    from vitforge.sw.artifact import ArtifactError

    args = _parser().parse_args(["eval", "--artifact", str(tmp_path / "nope"), "--json"])
    with pytest.raises(ArtifactError, match=r"manifest\.json: missing"):
        args.func(args)
