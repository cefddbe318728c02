"""Bit-slice sparsity against accuracy: a sweep of L1 and bit-slice L1, its frontier, and what bounds 2x.

A *point* is one model's int8 top-1 (= lossless ADCs) on the test images beside its zero-slice
ratios: per slice k, the fraction of all crossbar weights (every layer, one count per weight) whose
slice k of ``|code|`` is zero (:func:`.layers.zero_slice_ratios`), and ``overall``, their mean over
the slices (the fraction of all weight slices that are zero). Points come from trained runs (one
per penalty strength and pruning threshold, each pruned and fine-tuned) and from each trained model
pruned harder afterwards without fine-tuning (``thresholds``: every code below T cleared).

:func:`summarize` reads the target "at least twice plain L1's zero-slice ratio at no more than
``max_drop`` points lower accuracy" off the points, against the reference L1 run, on every
definition (overall and per slice), and states the bound: a weight with a nonzero code has at least
one nonzero slice of ``S``, so ``overall <= 1 - (1 - p) / S`` where ``p`` is the fraction of
weights whose code is 0 (:func:`pruned_fraction_needed`). An overall target ``R`` needs
``p >= 1 - S (1 - R)`` (none exists when ``R > 1``).

:func:`run_sweep` trains one run directory per point (:func:`.train.train`, which resumes an
interrupted run) and keeps each run's measured points in ``DIR/<run>/sparsity.json``, so a rerun
skips what is finished.
"""

from __future__ import annotations

import copy
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from torch import nn

from vitforge.sw.data import ImageData

from .evaluate import evaluate
from .layers import crossbar_layers, zero_slice_ratios
from .train import MODEL_FILE, TrainConfig, load_model, prune, train

#: The methods a sweep compares.
SWEEP_METHODS = ("l1", "bitslice-l1")
#: Where a run directory keeps its measured points.
POINT_FILE = "sparsity.json"
#: The definitions the target is read on: the overall ratio, then one per slice (``slice0`` LSB first).
OVERALL = "overall"


def slice_key(k: int) -> str:
    """The name of slice ``k``'s zero ratio in a point (``slice0`` is the least significant)."""
    return f"slice{k}"


def run_name(method: str, alpha: float, prune_codes: int) -> str:
    """The run directory of one sweep point, e.g. ``l1_a2_p2``, ``bitslice-l1_a0.5_p16``."""
    return f"{method}_a{alpha:g}_p{prune_codes}"


@dataclass(frozen=True)
class SweepConfig:
    """A sparsity sweep: every method at every penalty strength and training pruning threshold.

    Attributes:
        base: the training settings every run shares (model, data size, epochs, crossbar, seed);
            its method and penalty strengths are replaced per run.
        l1_alphas: ``l1_alpha`` values of the ``l1`` runs.
        bitslice_alphas: ``bitslice_alpha`` values of the ``bitslice-l1`` runs.
        prune_codes: training pruning thresholds (``prune |code| < P`` before fine-tuning); every
            alpha runs at ``prune_codes[0]``, every other P at each method's reference alpha.
        thresholds: post-training thresholds: each trained model pruned at ``|code| < T`` without
            fine-tuning (only those above the run's own P).
        reference_l1_alpha, reference_bitslice_alpha: the runs the other thresholds use; the L1
            reference run (``reference_l1_alpha``, ``prune_codes[0]``) is "plain L1" of the target.
        max_drop: accuracy points below the reference that still count.
    """

    base: TrainConfig
    l1_alphas: tuple[float, ...] = (1.0, 2.0, 8.0)
    bitslice_alphas: tuple[float, ...] = (0.5, 2.0, 8.0)
    prune_codes: tuple[int, ...] = (2,)
    thresholds: tuple[int, ...] = (8, 32)
    reference_l1_alpha: float = 2.0
    reference_bitslice_alpha: float = 0.5
    max_drop: float = 1.0

    def __post_init__(self) -> None:
        for name in ("l1_alphas", "bitslice_alphas"):
            vals = getattr(self, name)
            if not vals or any(not math.isfinite(a) or a < 0 for a in vals):
                raise ValueError(f"{name} must be a non-empty list of finite numbers >= 0, not {vals!r}")
        if not self.prune_codes or any(not 0 <= p <= 127 for p in self.prune_codes):
            raise ValueError(f"prune_codes must be a non-empty list in 0..127, not {self.prune_codes!r}")
        if any(not 1 <= t <= 128 for t in self.thresholds):
            raise ValueError(f"thresholds must be in 1..128, not {self.thresholds!r}")
        if self.reference_l1_alpha not in self.l1_alphas:
            raise ValueError(f"reference_l1_alpha {self.reference_l1_alpha} must be one of l1_alphas {self.l1_alphas}")
        if self.reference_bitslice_alpha not in self.bitslice_alphas:
            raise ValueError(f"reference_bitslice_alpha {self.reference_bitslice_alpha} must be one of "
                             f"bitslice_alphas {self.bitslice_alphas}")
        if not self.max_drop >= 0:
            raise ValueError(f"max_drop must be >= 0, not {self.max_drop!r}")

    @property
    def reference(self) -> str:
        """The run name of plain L1, the target's reference."""
        return run_name("l1", self.reference_l1_alpha, self.prune_codes[0])

    def runs(self) -> list[tuple[str, TrainConfig]]:
        """``(run name, training config)`` of every run, L1 first, in a fixed order without repeats."""
        out: dict[str, TrainConfig] = {}
        for method, alphas, ref in (("l1", self.l1_alphas, self.reference_l1_alpha),
                                    ("bitslice-l1", self.bitslice_alphas, self.reference_bitslice_alpha)):
            settings = [(a, self.prune_codes[0]) for a in alphas] + [(ref, p) for p in self.prune_codes[1:]]
            for alpha, p in settings:
                key = "l1_alpha" if method == "l1" else "bitslice_alpha"
                out.setdefault(run_name(method, alpha, p),
                               replace(self.base, method=method, prune_codes=p, **{key: alpha}))
        return list(out.items())


def zero_weight_fraction(model: nn.Module) -> float:
    """The fraction of all crossbar weights whose int8 code is 0 (pruned or rounded to 0)."""
    zeros, total = 0, 0
    for _, layer in crossbar_layers(model):
        codes = layer.weight_codes()
        zeros += int((codes == 0).sum())
        total += codes.numel()
    return zeros / max(total, 1)


def measure(model: nn.Module, tc: TrainConfig, data: ImageData) -> dict:
    """One point: ``{"top1": int8 top-1 (%) on every test image, "overall", "slice0".., "pruned"}``
    (zero ratios and the zero-weight fraction as fractions)."""
    ratios = zero_slice_ratios(model, tc.crossbar)
    point = {"top1": evaluate(model, data.x_test, data.y_test)["top1_mean"], OVERALL: sum(ratios) / len(ratios),
             "pruned": zero_weight_fraction(model)}
    point.update({slice_key(k): r for k, r in enumerate(ratios)})
    return point


def pruned_copy(model: nn.Module, threshold: int) -> nn.Module:
    """A copy of ``model`` with every weight whose code is below ``threshold`` in magnitude masked to 0."""
    out = copy.deepcopy(model)
    prune(out, threshold)
    return out


def pruned_fraction_needed(target: float, n_slices: int) -> float | None:
    """The least fraction of weights at code 0 that an overall zero-slice ratio ``target`` needs:
    ``1 - n_slices (1 - target)`` (a nonzero code has at least one nonzero slice), clipped at 0;
    None when ``target > 1`` (no model reaches it)."""
    if n_slices < 1:
        raise ValueError(f"n_slices must be positive, not {n_slices}")
    if target > 1:
        return None
    return max(0.0, 1.0 - n_slices * (1.0 - target))


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def _config_key(tc: TrainConfig) -> dict:
    """What a run's results depend on: its config without the progress-bar switch."""
    d = tc.to_dict()
    d.pop("progress")
    return d


def run_point(name: str, tc: TrainConfig, data: ImageData, out: Path, thresholds: tuple[int, ...]) -> list[dict]:
    """Train (or resume, or skip) run ``name`` in ``out/name`` and measure its points: the trained
    model (``"threshold": None``) and each post-training threshold above its own ``prune_codes``.

    The points are cached in ``out/name/sparsity.json`` with the config and thresholds they
    belong to; a finished run with the same ones is read back, nothing trained or evaluated.
    """
    run_dir = Path(out) / name
    cache = run_dir / POINT_FILE
    key = {"config": _config_key(tc), "thresholds": sorted(thresholds)}
    if cache.exists():
        saved = json.loads(cache.read_text())
        if {k: saved.get(k) for k in key} == key:
            return saved["points"]
    model_path = run_dir / MODEL_FILE
    if model_path.exists() and _config_key(load_model(model_path)[1]) == _config_key(tc):
        model = load_model(model_path)[0]
    else:
        model = train(tc, data, run_dir)
    alpha = tc.l1_alpha if tc.method == "l1" else tc.bitslice_alpha
    common = {"run": name, "method": tc.method, "alpha": alpha, "prune_codes": tc.prune_codes}
    points = [{**common, "threshold": None, **measure(model, tc, data)}]
    for t in sorted(thresholds):
        if t > tc.prune_codes:
            points.append({**common, "threshold": t, **measure(pruned_copy(model, t), tc, data)})
    _write_json(cache, {**key, "points": points})
    return points


def best_within(points: list[dict], key: str, floor: float) -> dict | None:
    """The point with the highest ``key`` among those with ``top1 >= floor`` (None if none)."""
    ok = [p for p in points if p["top1"] >= floor]
    return max(ok, key=lambda p: (p[key], p["top1"])) if ok else None


def frontier(points: list[dict], key: str) -> list[dict]:
    """The points no other point beats on both ``key`` and ``top1``, by increasing ``key``."""
    out: list[dict] = []
    for p in sorted(points, key=lambda p: (-p[key], -p["top1"])):
        if not out or p["top1"] > out[-1]["top1"]:
            out.append(p)
    return out[::-1]


def dominated(points: list[dict], by: list[dict], key: str) -> list[dict]:
    """The points of ``points`` that some point of ``by`` matches or beats on both ``key`` and
    ``top1`` and strictly beats on one of them."""
    def beats(q: dict, p: dict) -> bool:
        return q[key] >= p[key] and q["top1"] >= p["top1"] and (q[key] > p[key] or q["top1"] > p["top1"])
    return [p for p in points if any(beats(q, p) for q in by)]


def summarize(points: list[dict], reference: str, n_slices: int, max_drop: float = 1.0) -> dict:
    """The target read off ``points`` against the trained point of run ``reference`` (plain L1).

    Returns:
        ``{"reference": that point, "floor": its top1 - max_drop, "definitions": {definition: {
        "target": 2x the reference's ratio, "best": {method: the best point within the floor,
        "ratio": its ratio to the reference}, "dominated": {method: [how many of its points a point
        of the other method dominates (:func:`dominated`), how many it has]}}}, "reached": [(method,
        definition) at >= 2x],
        "bound": {"target", "pruned_needed", "best_top1_at_needed": the most accurate point with at
        least that fraction of zero weights (None if none), "most_pruned": the point with the most}}``.
    """
    refs = [p for p in points if p["run"] == reference and p["threshold"] is None]
    if not refs:
        raise ValueError(f"no trained point of the reference run {reference!r}")
    ref = refs[0]
    floor = ref["top1"] - max_drop
    definitions: dict[str, dict] = {}
    reached: list[list[str]] = []
    for d in [OVERALL] + [slice_key(k) for k in range(n_slices)]:
        entry: dict = {"reference": ref[d], "target": 2 * ref[d], "best": {}, "dominated": {}}
        for method in SWEEP_METHODS:
            mine = [p for p in points if p["method"] == method]
            others = [p for p in points if p["method"] != method]
            entry["dominated"][method] = [len(dominated(mine, others, d)), len(mine)]
            best = best_within(mine, d, floor)
            ratio = None if best is None or ref[d] == 0 else best[d] / ref[d]
            entry["best"][method] = {"point": best, "ratio": ratio}
            if ratio is not None and ratio >= 2:
                reached.append([method, d])
        definitions[d] = entry
    target = 2 * ref[OVERALL]
    needed = pruned_fraction_needed(target, n_slices)
    at_needed = [] if needed is None else [p for p in points if p["pruned"] >= needed]
    bound = {"target": target, "pruned_needed": needed,
             "best_top1_at_needed": max(at_needed, key=lambda p: p["top1"]) if at_needed else None,
             "most_pruned": max(points, key=lambda p: (p["pruned"], p["top1"]))}
    return {"reference": ref, "floor": floor, "max_drop": max_drop, "definitions": definitions, "reached": reached,
            "bound": bound}


def run_sweep(cfg: SweepConfig, data: ImageData, out: Path, log: Callable[[str], None] | None = None) -> dict:
    """Every run of ``cfg`` in ``out/<run>`` (finished ones skipped), then the summary.

    Returns:
        ``{"sweep": the settings, "points": every point, "summary": :func:`summarize`'s}``; also
        written to ``out/frontier.json``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    runs = cfg.runs()
    points: list[dict] = []
    for i, (name, tc) in enumerate(runs):
        log(f"[reram sparsity] run {i + 1}/{len(runs)}: {name}")
        points.extend(run_point(name, tc, data, out, cfg.thresholds))
    summary = summarize(points, cfg.reference, cfg.base.crossbar.n_slices, cfg.max_drop)
    result = {"sweep": {"base": cfg.base.to_dict(), "l1_alphas": list(cfg.l1_alphas),
                        "bitslice_alphas": list(cfg.bitslice_alphas), "prune_codes": list(cfg.prune_codes),
                        "thresholds": list(cfg.thresholds), "reference": cfg.reference, "max_drop": cfg.max_drop},
              "points": points, "summary": summary}
    _write_json(out / "frontier.json", result)
    return result
