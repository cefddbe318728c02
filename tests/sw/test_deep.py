"""The full demo training (minutes): enabled with VITFORGE_DEEP=1."""

from __future__ import annotations

import json
import os

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("VITFORGE_DEEP") != "1", reason="full demo training; set VITFORGE_DEEP=1"),
]


def test_demo_meets_issue_targets(tmp_path):
    from vitforge.sw.train import TrainConfig
    from vitforge.sw.workflow import Target, train_to_dir

    report = train_to_dir(tmp_path / "demo", "demo", 0, Target(), None, "demo", TrainConfig(progress=False),
                          plots=False, log=lambda s: None)
    assert report["golden_equals_qat"]
    assert report["int8_pruned_acc"] >= report["float_dense_acc"] - 1.0, json.dumps(report)
    assert report["gmacs_pruned"] <= 0.6 * report["gmacs_dense"], json.dumps(report)
