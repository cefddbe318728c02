"""The sparsity sweep: zero-weight fractions, harder pruning, the frontier, the 2x summary and its bound,
and a resumable sweep that skips finished runs."""

from __future__ import annotations

import json

import pytest
import torch

from vitforge.quant.crossbar import CrossbarConfig
from vitforge.sw.data import ImageData
from vitforge.sw.reram import sparsity
from vitforge.sw.reram.layers import crossbar_layers, zero_slice_ratios
from vitforge.sw.reram.models import ModelConfig
from vitforge.sw.reram.plots import plot_sparsity_frontier
from vitforge.sw.reram.sparsity import (
    POINT_FILE,
    SweepConfig,
    best_within,
    dominated,
    frontier,
    pruned_copy,
    pruned_fraction_needed,
    run_name,
    run_sweep,
    summarize,
    zero_weight_fraction,
)
from vitforge.sw.reram.train import TrainConfig, init_model

TINY = ModelConfig(channels=2, image_size=8)
BASE = TrainConfig(model=TINY, float_epochs=1, qat_epochs=1, finetune_epochs=1, batch_size=16, max_train=None,
                   progress=False)


def _data(n: int = 48) -> ImageData:
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 10
    x = torch.rand(n, 1, 8, 8, generator=gen) * 0.2
    x[torch.arange(n), 0, y % 8, y % 8] += 1.0
    return ImageData(x, y, x[:16].clone(), y[:16].clone(), tuple(str(i) for i in range(10)))


def _point(run: str, method: str, top1: float, overall: float, slices=(0.5, 0.5), pruned: float = 0.0,
           threshold: int | None = None) -> dict:
    return {"run": run, "method": method, "threshold": threshold, "top1": top1, "overall": overall,
            "slice0": slices[0], "slice1": slices[1], "pruned": pruned}


@pytest.mark.parametrize(("target", "n_slices", "expected"), [
    (0.987, 4, 1 - 4 * 0.013), (0.75, 4, 0.0), (0.6, 4, 0.0), (0.9, 2, 0.8), (1.0, 4, 1.0), (1.006, 4, None)])
def test_pruned_fraction_needed(target, n_slices, expected):
    got = pruned_fraction_needed(target, n_slices)
    assert got == (None if expected is None else pytest.approx(expected))


def test_the_bound_holds_on_a_model():
    """overall zero ratio <= 1 - (1 - p) / S, p the fraction of zero codes, at every pruning threshold."""
    model = init_model(TINY, 1)
    cfg = CrossbarConfig(cell_bits=2)
    for t in (0, 4, 16, 64, 128):
        m = pruned_copy(model, t)
        ratios = zero_slice_ratios(m, cfg)
        p = zero_weight_fraction(m)
        assert sum(ratios) / len(ratios) <= 1 - (1 - p) / cfg.n_slices + 1e-12
    assert zero_weight_fraction(pruned_copy(model, 128)) == 1.0


def test_pruned_copy_clears_small_codes_and_leaves_the_model():
    model = init_model(TINY, 0)
    before = [layer.weight_codes().clone() for _, layer in crossbar_layers(model)]
    out = pruned_copy(model, 16)
    for (_, layer), (_, new), old in zip(crossbar_layers(model), crossbar_layers(out), before, strict=True):
        assert torch.equal(layer.weight_codes(), old)
        codes = new.weight_codes()
        assert bool((codes[old.abs() < 16] == 0).all())
        assert torch.equal(codes[old.abs() >= 16], old[old.abs() >= 16])
    assert zero_weight_fraction(out) > zero_weight_fraction(model)


def test_frontier_keeps_the_points_nothing_beats():
    pts = [_point("a", "l1", 80, 0.5), _point("b", "l1", 78, 0.6), _point("c", "l1", 79, 0.55),
           _point("d", "l1", 70, 0.52), _point("e", "l1", 60, 0.9), _point("f", "l1", 81, 0.4)]
    assert [p["run"] for p in frontier(pts, "overall")] == ["f", "a", "c", "b", "e"]


def test_dominated_needs_both_coordinates():
    mine = [_point("a", "bitslice-l1", 80, 0.5), _point("b", "bitslice-l1", 70, 0.9),
            _point("c", "bitslice-l1", 75, 0.6)]
    by = [_point("x", "l1", 80, 0.6), _point("y", "l1", 60, 0.95)]
    # a: x beats it on the ratio at equal top-1; b: y is sparser but less accurate; c: x beats both
    assert [p["run"] for p in dominated(mine, by, "overall")] == ["a", "c"]
    assert dominated(by, by, "overall") == []  # a point never dominates itself


def test_best_within_respects_the_floor():
    pts = [_point("a", "l1", 80, 0.5), _point("b", "l1", 78.9, 0.9), _point("c", "l1", 79.2, 0.7)]
    assert best_within(pts, "overall", 79.0)["run"] == "c"
    assert best_within(pts, "overall", 81.0) is None


def test_summarize_reads_2x_per_definition_against_the_reference():
    pts = [_point("l1_ref", "l1", 80.0, 0.40, (0.30, 0.50)),
           _point("l1_ref", "l1", 70.0, 0.60, (0.70, 0.50), pruned=0.5, threshold=32),
           _point("bs", "bitslice-l1", 79.5, 0.70, (0.61, 0.79)),  # within 1 point: 2x on slice 0 only
           _point("bs_hard", "bitslice-l1", 78.5, 0.95, (0.99, 0.91), pruned=0.9)]  # 1.5 below: does not count
    s = summarize(pts, "l1_ref", n_slices=2)
    assert s["floor"] == 79.0
    assert s["definitions"]["overall"]["target"] == pytest.approx(0.8)
    assert s["definitions"]["overall"]["best"]["bitslice-l1"]["ratio"] == pytest.approx(0.70 / 0.40)
    assert s["definitions"]["slice0"]["best"]["bitslice-l1"]["ratio"] == pytest.approx(0.61 / 0.30)
    assert s["definitions"]["slice0"]["best"]["l1"]["point"]["threshold"] is None  # T32 is below the floor
    assert s["reached"] == [["bitslice-l1", "slice0"]]
    # overall: bs (79.5, 0.70) and bs_hard (78.5, 0.95) beat l1_ref T32 (70, 0.60); nothing of l1 beats them
    assert s["definitions"]["overall"]["dominated"] == {"l1": [1, 2], "bitslice-l1": [0, 2]}
    assert s["bound"]["pruned_needed"] == pytest.approx(1 - 2 * (1 - 0.8))
    assert s["bound"]["best_top1_at_needed"]["run"] == "bs_hard"
    assert s["bound"]["most_pruned"]["pruned"] == 0.9
    with pytest.raises(ValueError, match="reference run 'nope'"):
        summarize(pts, "nope", n_slices=2)


def test_summarize_says_when_2x_overall_is_impossible():
    pts = [_point("ref", "l1", 80.0, 0.55), _point("bs", "bitslice-l1", 80.0, 0.99, pruned=0.99)]
    s = summarize(pts, "ref", n_slices=2)
    assert s["bound"]["pruned_needed"] is None and s["bound"]["best_top1_at_needed"] is None
    assert s["reached"] == []


def test_sweep_config_runs_and_refusals():
    cfg = SweepConfig(base=BASE, l1_alphas=(1.0, 2.0), bitslice_alphas=(0.5,), prune_codes=(2, 16), thresholds=(8,))
    runs = dict(cfg.runs())
    assert list(runs) == ["l1_a1_p2", "l1_a2_p2", "l1_a2_p16", "bitslice-l1_a0.5_p2", "bitslice-l1_a0.5_p16"]
    assert runs["l1_a1_p2"].l1_alpha == 1.0 and runs["l1_a2_p16"].prune_codes == 16
    assert runs["bitslice-l1_a0.5_p16"].method == "bitslice-l1" and runs["bitslice-l1_a0.5_p16"].bitslice_alpha == 0.5
    assert cfg.reference == "l1_a2_p2" == run_name("l1", 2.0, 2)
    for kw, msg in [({"l1_alphas": ()}, "l1_alphas"), ({"bitslice_alphas": (-1.0,)}, "bitslice_alphas"),
                    ({"prune_codes": (200,)}, "prune_codes"), ({"thresholds": (0,)}, "thresholds"),
                    ({"l1_alphas": (1.0,)}, "reference_l1_alpha"), ({"max_drop": -1.0}, "max_drop")]:
        with pytest.raises(ValueError, match=msg):
            SweepConfig(base=BASE, **kw)


def test_sweep_measures_every_run_and_skips_finished_ones(tmp_path, monkeypatch):
    cfg = SweepConfig(base=BASE, l1_alphas=(2.0,), bitslice_alphas=(0.5,), thresholds=(8, 2))
    data = _data()
    first = run_sweep(cfg, data, tmp_path, log=lambda _: None)
    pts = first["points"]
    # per run: the trained model and the threshold above its own prune_codes (2: only 8)
    assert [(p["run"], p["threshold"]) for p in pts] == [("l1_a2_p2", None), ("l1_a2_p2", 8),
                                                        ("bitslice-l1_a0.5_p2", None), ("bitslice-l1_a0.5_p2", 8)]
    for trained, harder in (pts[:2], pts[2:]):
        assert harder["pruned"] >= trained["pruned"] and harder["overall"] >= trained["overall"]
        assert trained["overall"] == pytest.approx(sum(trained[f"slice{k}"] for k in range(4)) / 4)
    assert json.loads((tmp_path / "frontier.json").read_text())["points"] == pts
    assert first["summary"]["reference"]["run"] == "l1_a2_p2"

    def no_training(*_a, **_k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(sparsity, "train", no_training)
    assert run_sweep(cfg, data, tmp_path, log=lambda _: None)["points"] == pts
    # new thresholds: measured again on the saved models, still without training
    more = run_sweep(SweepConfig(base=BASE, l1_alphas=(2.0,), bitslice_alphas=(0.5,), thresholds=(8, 16)),
                     data, tmp_path, log=lambda _: None)["points"]
    assert [p["threshold"] for p in more] == [None, 8, 16, None, 8, 16]
    assert more[0] == pts[0] and more[1] == pts[1]
    assert json.loads((tmp_path / "l1_a2_p2" / POINT_FILE).read_text())["thresholds"] == [8, 16]
    png = plot_sparsity_frontier(more, summarize(more, "l1_a2_p2", 4), tmp_path / "frontier.png", 4)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
