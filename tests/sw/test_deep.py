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
    assert report["float_dense_acc"] >= 89.98 and report["stages"][0]["converged"], json.dumps(report)
    assert report["int8_pruned_acc"] >= report["float_dense_acc"] - 1.0, json.dumps(report)
    assert report["gmacs_pruned"] <= 0.6 * report["gmacs_dense"], json.dumps(report)


@pytest.mark.parametrize("name", ["digits_noisy", "digits_scaled"])
def test_harder_data_sets_with_default_flags(tmp_path, name):
    """The issue's bar on data harder than the default: the dense stage converges or warns, and the
    int8 pruned model stays within 1.5 points of float dense at >= 40% fewer GMACs."""
    import importlib.util
    from pathlib import Path

    from vitforge.sw.data import digits_variant, save_npz
    from vitforge.sw.train import TrainConfig
    from vitforge.sw.workflow import Target, train_to_dir

    script = Path(__file__).parents[2] / "scripts" / "make_datasets.py"
    spec = importlib.util.spec_from_file_location("make_datasets", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = save_npz(tmp_path / f"{name}.npz", **digits_variant(module.VARIANTS[name], seed=0))
    # Plots on: a deep run's DIR/plots/learning_curves.png is the README's figure (pytest --basetemp keeps it).
    report = train_to_dir(tmp_path / name, "demo", 0, Target(), f"npz:{path}", "demo", TrainConfig(progress=False),
                          plots=True, log=lambda s: None)
    dense = report["stages"][0]
    assert dense["converged"] or any(w.startswith("stage dense did not converge") for w in report["warnings"])
    assert report["int8_pruned_acc"] >= report["float_dense_acc"] - 1.5, json.dumps(report)
    assert report["gmacs_reduction"] >= 0.40, json.dumps(report)


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
