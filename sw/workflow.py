"""End-to-end flows behind the CLI: train all stages and export, export a checkpoint, evaluate an artifact.

``train_to_dir`` writes::

    DIR/checkpoints/{dense,pruned,qat}.safetensors   weights + config (metadata)
    DIR/artifact/                                     the int8 artifact (sw/export.py)
    DIR/report.json                                   accuracies, GMACs, schedule, stages (deterministic)
    DIR/plots/*.png                                   accuracy vs GMACs / latency, keep heatmaps, learning curves
    DIR/timings.json                                  wall seconds per stage (not deterministic)
    DIR/state/                                        the stages' checkpoints (resume) and run.json (the arguments)

``resume_dir`` continues a killed ``train_to_dir`` from its ``DIR/state/`` (same arguments, read
from ``run.json``); the artifact is byte-identical to the one an uninterrupted run writes.

The latency target, in milliseconds or as a latency reduction (the default: 50%), is stated in
sw/latency.py's :class:`CycleLatency` (the RTL-calibrated cycle model at the hardware preset's clock);
a MAC-reduction target in the MAC proxy.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import vitforge.kernels as kernels
from vitforge.quant.fake import set_mode

from .data import ImageData, load_data
from .export import extract, load_artifact, write_artifact
from .golden import GoldenModel
from .latency import CycleLatency, LatencyModel, MacLatency, model_macs, target_from_reduction, tokens_per_block
from .train import TrainConfig, run_pipeline
from .vit import Trace, VisionTransformer, ViTConfig, get_config

#: Default pruning target of ``vitforge train`` when no target is given: this fraction of the dense
#: model's latency under the cycle model of the hardware preset at its clock (issue #13: the schedule
#: comes from the cycle model, as HeatViT's comes from measured latency).
DEFAULT_LATENCY_REDUCTION = 0.5


@dataclass(frozen=True)
class Target:
    """The user's latency target, at most one of: milliseconds or a fraction of the dense model's latency
    to cut, both under the cycle model of the hardware preset at its clock (:class:`CycleLatency`), or a
    fraction of the dense model's MACs to cut (under the MAC proxy, :class:`MacLatency`). None of them:
    :data:`DEFAULT_LATENCY_REDUCTION` under the cycle model."""

    latency_ms: float | None = None
    mac_reduction: float | None = None
    latency_reduction: float | None = None

    def __post_init__(self) -> None:
        given = [n for n in ("latency_ms", "mac_reduction", "latency_reduction") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one latency target, not {' and '.join(given)}")
        if self.latency_ms is not None and not self.latency_ms > 0:
            raise ValueError(f"latency_ms must be positive, not {self.latency_ms!r}")

    def latency_model(self, hw_preset: str) -> LatencyModel:
        """The model the target is stated in: :class:`MacLatency` for a MAC reduction, else
        :class:`CycleLatency` on ``hw_preset``."""
        return MacLatency() if self.mac_reduction is not None else CycleLatency(hw_preset)

    def resolve(self, cfg: ViTConfig, latency: LatencyModel) -> float:
        """The target in ms under ``latency`` (the model :meth:`latency_model` gives)."""
        if self.latency_ms is not None:
            return self.latency_ms
        if self.mac_reduction is not None:
            return target_from_reduction(cfg, self.mac_reduction, latency)
        return target_from_reduction(cfg, DEFAULT_LATENCY_REDUCTION if self.latency_reduction is None
                                     else self.latency_reduction, latency)


def save_checkpoint(model: VisionTransformer, path: Path, stage: str) -> None:
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    # One metadata key: safetensors stores metadata in a hash map, so several keys come out in
    # varying order and the same model would not give the same bytes.
    meta = {"vitforge": json.dumps({"config": model.cfg.to_dict(), "stage": stage,
                                    "mode": "qat" if model.patch_embed.quantized else "float"}, sort_keys=True)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> VisionTransformer:
    """A model from :func:`save_checkpoint` (safetensors: no code runs on load), in eval mode."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get("vitforge")
    if raw is None:
        raise ValueError(f"{path}: not a vitforge checkpoint (no 'vitforge' metadata)")
    meta = json.loads(raw)
    cfg = ViTConfig.from_dict(meta["config"])
    model = VisionTransformer(cfg)
    model.load_state_dict(load_file(str(path)))
    model.set_decision("threshold")
    if meta.get("mode") == "qat":
        model.set_poly(cfg.poly)
        set_mode(model, "qat")
    else:
        model.set_poly(False)
    return model.eval()


def export_model(model: VisionTransformer, out: Path, hw_preset: str, dataset: dict | None = None) -> Path:
    sample = torch.zeros(1, model.cfg.in_chans, model.cfg.image_size, model.cfg.image_size)
    im = extract(model, sample)
    return write_artifact(im, out, hw_preset, extra={"dataset": dataset} if dataset else None)


def evaluate_artifact(path: Path, data: ImageData | None = None, limit: int | None = None,
                      progress: bool = False) -> dict:
    """Golden-model top-1 (%) and mean GMACs of an artifact on its data set's test split.

    ``data``/``limit`` default to the data set and image count recorded in the artifact.
    """
    im, manifest = load_artifact(path)
    ds = (manifest.get("extra") or {}).get("dataset") or {}
    if data is None:
        data = load_data(ds.get("spec"), seed=ds.get("seed", 0), size=im.config.image_size)
    if limit is None:
        limit = ds.get("limit")
    x, y = data.x_test, data.y_test
    if limit is not None:
        x, y = x[:limit], y[:limit]
    res = GoldenModel(im).evaluate(x, y, progress=progress)
    return {"top1": res["top1"], "gmacs": res["gmacs"], "images": len(y), "tokens_per_block": res["tokens"],
            "logits": res["logits"]}


#: The arguments of a run, saved in ``DIR/state/run.json`` for ``resume_dir``.
RUN_FILE = "run.json"


def _write_json(path: Path, obj: dict) -> None:
    """``obj`` as sorted, indented JSON, written to a temporary file and renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, sort_keys=True, indent=2) + "\n")
    os.replace(tmp, path)


def resume_dir(out: Path, log=print) -> dict:
    """Continue the ``train_to_dir`` run in ``out`` from its saved state (same arguments)."""
    run_file = Path(out) / "state" / RUN_FILE
    if not run_file.is_file():
        raise FileNotFoundError(f"{run_file}: no saved run to resume (start one with `vitforge train --out {out}`)")
    a = json.loads(run_file.read_text())
    if a["kernels"] != kernels.KERNEL_PROFILE:
        kernels.set_kernel_profile(a["kernels"])  # training checks that it took effect
    saved = a["target"]
    if "latency_reduction" not in saved and saved["latency_ms"] is None and saved["mac_reduction"] is None:
        saved = {**saved, "mac_reduction": 0.5}  # a run started before the default moved to the cycle model
    target = Target(**saved)
    train = {**a["train"], "progress": None}
    return train_to_dir(Path(out), a["preset"], a["seed"], target, a["data_spec"], a["hw_preset"],
                        TrainConfig(**train), ViTConfig.from_dict(a["cfg"]), a["plots"], log, a["eval_limit"],
                        resume=True)


def train_to_dir(
    out: Path, preset: str = "demo", seed: int = 0, target: Target = Target(), data_spec: str | None = None,
    hw_preset: str = "demo", tc: TrainConfig | None = None, cfg: ViTConfig | None = None, plots: bool = True,
    log=print, eval_limit: int | None = None, resume: bool = False,
) -> dict:
    """Train all stages, export, evaluate the artifact with the golden model, write the report.

    ``eval_limit``: evaluate on the first N test images only (recorded in the artifact, so that
    ``vitforge eval`` uses the same images); None = the whole test split. ``resume``: continue from
    the checkpoints in ``out/state`` (a fresh run clears them).
    """
    cfg = cfg or get_config(preset)
    tc = tc or TrainConfig(seed=seed)
    state = Path(out) / "state"
    run_args = {"preset": preset, "seed": seed, "target": asdict(target), "data_spec": data_spec,
                "hw_preset": hw_preset, "train": {**tc.to_dict(), "progress": None}, "cfg": cfg.to_dict(),
                "plots": plots, "eval_limit": eval_limit, "kernels": kernels.KERNEL_PROFILE}
    if resume:
        saved = json.loads((state / RUN_FILE).read_text())
        if saved != json.loads(json.dumps(run_args)):
            raise ValueError(f"{state / RUN_FILE}: the saved run has other arguments; resume it with resume_dir")
    elif state.exists():
        shutil.rmtree(state)
    _write_json(state / RUN_FILE, run_args)
    data = load_data(data_spec, seed=seed, size=cfg.image_size)
    if data.image_size != cfg.image_size:
        raise ValueError(f"data {data_spec!r} has {data.image_size}x{data.image_size} images; "
                         f"model preset {preset!r} takes {cfg.image_size}x{cfg.image_size}")
    cfg = ViTConfig.from_dict({**cfg.to_dict(), "in_chans": data.channels, "num_classes": data.num_classes})
    latency = target.latency_model(hw_preset)
    result = run_pipeline(cfg, data, tc, target.resolve(cfg, latency), latency, log=log, state_dir=state)
    out.mkdir(parents=True, exist_ok=True)
    for stage, model in (("dense", result.dense), ("pruned", result.pruned), ("qat", result.qat)):
        save_checkpoint(model, out / "checkpoints" / f"{stage}.safetensors", stage)
    dataset = {"spec": data_spec or "digits", "seed": seed, "limit": eval_limit}
    art = export_model(result.qat, out / "artifact", hw_preset, dataset)
    ev = evaluate_artifact(art, data, limit=eval_limit, progress=tc.progress_mode == "bars")
    # The QAT model's forward is the integer path: its test logits do not depend on the batching.
    qat_logits = result.metrics["qat"]["logits"][:eval_limit]
    codes = torch.round(qat_logits.double() / result.qat.head.out_scale).to(torch.int64)
    dense_cfg = cfg.with_selectors((), ())
    report = {
        "float_dense_acc": result.metrics["dense"]["top1"],
        "float_pruned_acc": result.metrics["pruned"]["top1"],
        "qat_acc": result.metrics["qat"]["top1"],
        "int8_pruned_acc": ev["top1"],
        "golden_equals_qat": bool(torch.equal(codes, ev["logits"])),
        "gmacs_dense": model_macs(dense_cfg, tokens_per_block(dense_cfg)) / 1e9,
        "gmacs_pruned": ev["gmacs"],
        "keep_rates": list(result.schedule.keep_rates),
        "selector_blocks": list(result.schedule.selector_blocks),
        "thresholds": list(result.qat.cfg.thresholds),
        "tokens_per_block": ev["tokens_per_block"],
        "latency_model": latency.label,
        "latency_ms_dense_model": result.schedule.dense_latency_ms,
        # The trained model's config carries the selectors (``cfg`` is the dense architecture).
        "latency_ms_pruned_model": latency.latency_ms(result.qat.cfg, ev["tokens_per_block"]),
        "latency_target_ms": target.resolve(cfg, latency),
        "test_images": ev["images"],
        "train_images": len(result.split.y_fit),
        "val_images": len(result.split.y_val),
        "stages": [{k: v for k, v in r.to_dict().items() if k != "finished"} for r in result.stages],
        "converged": all(r.converged for r in result.stages),
        "warnings": result.warnings,
        "kernels": result.kernels,
        "model": cfg.to_dict(),
        "train": {**tc.to_dict(), "progress": None},
        "hw_preset": hw_preset,
    }
    report["gmacs_reduction"] = 1 - report["gmacs_pruned"] / report["gmacs_dense"]
    _write_json(out / "report.json", report)
    _write_json(out / "timings.json", {"seconds_per_stage": result.seconds})  # not deterministic: apart
    report = json.loads((out / "report.json").read_text())
    if plots:
        _plots(out / "plots", report, result, data)
    return report


def _plots(folder: Path, report: dict, result, data: ImageData) -> None:
    from .plots import plot_accuracy, plot_keep_heatmaps, plot_learning_curves

    folder.mkdir(parents=True, exist_ok=True)
    gd, gp = report["gmacs_dense"], report["gmacs_pruned"]
    points = [
        {"label": "float dense", "top1": report["float_dense_acc"], "gmacs": gd,
         "ms": report["latency_ms_dense_model"]},
        {"label": "float pruned", "top1": report["float_pruned_acc"], "gmacs": gp,
         "ms": report["latency_ms_pruned_model"]},
        {"label": "int8 pruned (golden)", "top1": report["int8_pruned_acc"], "gmacs": gp,
         "ms": report["latency_ms_pruned_model"]},
    ]
    plot_accuracy(points, folder / "acc_vs_gmacs.png", "gmacs", "GMACs per image")
    plot_accuracy(points, folder / "acc_vs_latency.png", "ms", f"modeled latency (ms, {report['latency_model']})")
    plot_learning_curves(report["stages"], folder / "learning_curves.png")
    tr = Trace()
    with torch.no_grad():
        result.qat(data.x_test[:6], trace=tr)
    plot_keep_heatmaps(data.x_test[:6], tr.alive, result.qat.cfg.patch_size, folder / "keep_heatmap.png",
                       result.qat.cfg.selector_blocks)
