"""The full demo training (minutes): enabled with VITFORGE_DEEP=1."""

from __future__ import annotations

import json

import pytest

pytestmark = [
    pytest.mark.slow,
]


def test_demo_meets_issue_targets(tmp_path):
    from vitforge.sw.train import TrainConfig
    from vitforge.sw.workflow import Target, train_to_dir

    report = train_to_dir(tmp_path / "demo", "demo", 0, Target(), None, "demo", TrainConfig(progress=False),
                          plots=False, log=lambda s: None)
    assert report["golden_equals_qat"]
    assert report["int8_pruned_acc"] >= report["float_dense_acc"] - 1.0, json.dumps(report)
    assert report["gmacs_pruned"] <= 0.6 * report["gmacs_dense"], json.dumps(report)


def test_latency_target_lands_within_5_percent_in_rtl_cycles(tmp_path):
    """Train for a latency target under the cycle model, then run test images on the RTL: their mean
    latency at the preset's clock is within 5% of the target."""
    from vitforge.sw.runtime import Runtime, run_images
    from vitforge.sw.train import TrainConfig
    from vitforge.sw.workflow import Target, train_to_dir

    target = 17.0
    train_to_dir(tmp_path / "lt", "demo", 0, Target(latency_ms=target), None, "demo", TrainConfig(progress=False),
                 plots=False, log=lambda s: None)
    rt = Runtime(tmp_path / "lt" / "artifact", "rtl")
    try:
        from vitforge.sw.data import load_data

        data = load_data(None, size=rt.model.config.image_size)
        res = run_images(rt, data.x_test[:16], data.y_test[:16])
    finally:
        rt.close()
    assert res["exact"] == res["images"] == 16
    assert abs(res["ms_per_image_at_clock"] / target - 1) <= 0.05, json.dumps(res)
