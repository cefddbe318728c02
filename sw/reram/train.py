"""Training for crossbars: plain, L1, bit-slice L1 (Zhang et al. 2019) and ReSNA (Yang et al. 2021).

Every method runs the same stages on the same seeded batches:

1. ``float``: float pretraining (``l1`` adds ``l1_alpha * mean |w|`` over the crossbar weights);
2. ``qat``: input ranges calibrated, then int8 fake-quant fine-tuning with straight-through
   rounding. ``l1`` keeps its penalty; ``bitslice-l1`` adds the bit-slice penalty
   ``bitslice_alpha * sum_k |slice_k| / N`` on the int8 codes' magnitude slices (floor straight
   through, as the paper's code); ``resna`` trains in the ``noisy`` mode: fresh device noise at
   every iteration on the noise-free master weights, ``last_layer_noise_scale`` of it on the last
   layer;
3. ``finetune`` (``l1``, ``bitslice-l1``): weights whose code is below ``prune_codes`` in
   magnitude are pruned (a fixed mask: their gradients vanish), then fine-tuned with the same loss.
   With ``adc_budget`` the codes are projected onto the column budgets of the crossbar's ADCs
   (:mod:`.budget`) after pruning and after every fine-tuning step (projected gradient descent),
   so the final model never makes a saturating ADC of ``crossbar`` clip, whatever its inputs.

The floor-straight-through bit-slice penalty is, in its gradient, a reweighted L1 on the int8
codes: slice k's surrogate gradient with respect to the magnitude is ``2^(-k c)`` wherever the
slice is nonzero (``|0|`` has none), so the penalty's is ``sign(w) / scale * sum 2^(-k c)`` over
the weight's nonzero slices (``test_bitslice_penalty_gradient_is_a_reweighted_l1``): it shrinks
whole magnitudes, mostly by their top slice's weight, and never clears one slice alone. What
acts on slices and columns for real is the projection.

State is saved after every epoch (``DIR/state.pt``, loaded with ``weights_only=True``) and every
stage's model as ``DIR/checkpoints/<stage>.safetensors``; rerunning the same command resumes
from the last finished epoch and gives the same bytes as an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from vitforge.quant.crossbar.config import CrossbarConfig
from vitforge.sw.data import ImageData

from .budget import project_model, slice_budgets
from .device import NoiseConfig, OperatingPoint
from .layers import attach, calibrate, crossbar_layers, detach_sessions, set_mode
from .models import ModelConfig, build_model

METHODS = ("plain", "l1", "bitslice-l1", "resna")
STAGES = ("float", "qat", "finetune")
#: A stage's weight decay (AdamW).
WEIGHT_DECAY = 1e-4
#: Images used to calibrate the input ranges.
CALIB_IMAGES = 512
STATE_FILE = "state.pt"
MODEL_FILE = "model.safetensors"


@dataclass(frozen=True)
class TrainConfig:
    """A crossbar training run.

    Attributes:
        method: ``plain``, ``l1``, ``bitslice-l1`` or ``resna``.
        model: the model (``ModelConfig``).
        crossbar: the crossbar whose slices the bit-slice penalty sees and whose noise ReSNA trains with.
        op: ReSNA's training operating point.
        seed: seeds init, batches and noise.
        float_epochs, qat_epochs, finetune_epochs: stage lengths (fractional: a prefix of the last epoch).
        lr: AdamW learning rate (cosine decay per stage; the later stages use ``lr / 4``).
        batch_size; max_train: use the first N training images (None: all).
        l1_alpha: plain L1 weight (on ``mean |w|``); bitslice_alpha: bit-slice penalty weight.
        prune_codes: prune weights with ``|code| < prune_codes`` before fine-tuning.
        last_layer_noise_scale: ReSNA's noise factor on the last layer (less noise on FC layers).
        prog_sigma: ReSNA's programming variation (level steps) while training; None: the crossbar's.
        adc_budget: (``l1``, ``bitslice-l1``) project the codes onto the column budgets of
            ``crossbar``'s ADCs (saturate mode, :func:`.budget.slice_budgets`) after pruning and
            after every fine-tuning step.
        snap: (``l1``, ``bitslice-l1``) at the same points, after the budget projection, clear the
            lowest slices of every code whose value there is at most ``snap`` codes
            (:func:`.budget.snap_codes`; 0: off).
        progress: tqdm bars when stderr is a terminal (one line per stage otherwise).
    """

    method: str = "plain"
    model: ModelConfig = field(default_factory=ModelConfig)
    crossbar: CrossbarConfig = field(default_factory=CrossbarConfig)
    op: OperatingPoint = field(default_factory=OperatingPoint)
    seed: int = 0
    float_epochs: float = 6.0
    qat_epochs: float = 2.0
    finetune_epochs: float = 1.0
    lr: float = 3e-3
    batch_size: int = 64
    max_train: int | None = 4000
    l1_alpha: float = 2.0
    bitslice_alpha: float = 0.5
    prune_codes: int = 2
    last_layer_noise_scale: float = 0.5
    prog_sigma: float | None = None
    adc_budget: bool = False
    snap: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {self.method!r}")
        for name in ("float_epochs", "qat_epochs", "finetune_epochs", "l1_alpha", "bitslice_alpha",
                     "last_layer_noise_scale"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, not {v!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, not {self.lr!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, not {self.batch_size!r}")
        if self.max_train is not None and self.max_train < 1:
            raise ValueError(f"max_train must be positive or None, not {self.max_train!r}")
        if not 0 <= self.prune_codes <= 127:
            raise ValueError(f"prune_codes must be in 0..127, not {self.prune_codes!r}")
        if isinstance(self.snap, bool) or not isinstance(self.snap, int) or self.snap < 0:
            raise ValueError(f"snap must be an integer >= 0, not {self.snap!r}")
        if self.snap and self.method not in ("l1", "bitslice-l1"):
            raise ValueError(f"snap needs a fine-tuning method (l1, bitslice-l1), not {self.method!r}")
        if self.adc_budget:
            if self.method not in ("l1", "bitslice-l1"):
                raise ValueError(f"adc_budget needs a fine-tuning method (l1, bitslice-l1), not {self.method!r}")
            if all(b is None for b in slice_budgets(self.crossbar)):
                raise ValueError(f"adc_budget needs ADC bits below lossless ({self.crossbar.lossless_bits}) on some "
                                 f"slice, not {self.crossbar.slice_adc_bits}")

    @property
    def stages(self) -> tuple[tuple[str, float], ...]:
        out = [("float", self.float_epochs), ("qat", self.qat_epochs)]
        if self.method in ("l1", "bitslice-l1"):
            out.append(("finetune", self.finetune_epochs))
        return tuple(out)

    def noise(self) -> NoiseConfig:
        return NoiseConfig(op=self.op, prog_sigma=self.prog_sigma)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["crossbar"] = asdict(self.crossbar)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        xb = dict(d["crossbar"])
        if isinstance(xb.get("adc_bits"), list):
            xb["adc_bits"] = tuple(xb["adc_bits"])
        d["crossbar"] = CrossbarConfig(**xb)
        d["model"] = ModelConfig(**d["model"])
        d["op"] = OperatingPoint(**d["op"])
        return cls(**d)


def _floor_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.floor(x) - x).detach()


def bitslice_penalty(model: nn.Module, cfg: CrossbarConfig) -> torch.Tensor:
    """``sum_k |slice_k(|code|)| / N`` over every crossbar weight: slices of the int8 magnitude
    (``floor(m / 2^(k c)) mod 2^c``, floor straight through; ``m = |w| / scale``, unrounded)."""
    total, count = torch.zeros(()), 0
    for _, layer in crossbar_layers(model):
        mag = layer.weight_matrix().abs() / layer.weight_scale()
        for k in range(cfg.n_slices):
            sl = torch.remainder(_floor_ste(mag / float(1 << (k * cfg.cell_bits))), float(1 << cfg.cell_bits))
            total = total + sl.abs().sum()
        count += mag.numel()
    return total / max(count, 1)


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """``mean |w|`` over every crossbar weight."""
    ws = [layer.weight_matrix().abs().reshape(-1) for _, layer in crossbar_layers(model)]
    return torch.cat(ws).mean()


def prune(model: nn.Module, prune_codes: int) -> float:
    """Zero the mask of every weight whose int8 code is below ``prune_codes`` in magnitude; the pruned fraction."""
    pruned, total = 0, 0
    with torch.no_grad():
        for _, layer in crossbar_layers(model):
            keep = (layer.weight_codes().abs() >= prune_codes).reshape(layer.weight.shape).to(layer.mask.dtype)
            layer.mask.mul_(keep)
            pruned += int((layer.mask == 0).sum())
            total += layer.mask.numel()
    return pruned / max(total, 1)


def _unbudgeted(cfg: CrossbarConfig) -> CrossbarConfig:
    """``cfg`` with lossless ADCs (no column budget: snapping alone)."""
    return replace(cfg, adc_bits=None)


def init_model(cfg: ModelConfig, seed: int) -> nn.Module:
    """A freshly initialized model; the initialization draws from ``seed`` alone (the global RNG is restored)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(cfg)


def save_model(model: nn.Module, path: Path, tc: TrainConfig, extra: dict | None = None) -> None:
    """Weights, masks and input scales as safetensors, the training config as metadata; atomic."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    meta = {"vitforge-reram": json.dumps({"train": tc.to_dict(), **(extra or {})}, sort_keys=True)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_model(path: str | Path) -> tuple[nn.Module, TrainConfig, dict]:
    """A model from :func:`save_model` (no code runs on load), its training config and extra metadata."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get("vitforge-reram")
    if raw is None:
        raise ValueError(f"{path}: not a vitforge reram checkpoint (no 'vitforge-reram' metadata)")
    meta = json.loads(raw)
    tc = TrainConfig.from_dict(meta.pop("train"))
    model = build_model(tc.model)
    model.load_state_dict(load_file(str(path)))
    model.eval()
    return model, tc, meta


def _batches(n: int, batch: int, gen: torch.Generator):
    perm = torch.randperm(n, generator=gen)
    for i in range(0, n, batch):
        yield perm[i:i + batch]


def _loss_fn(model: nn.Module, tc: TrainConfig, stage: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = F.cross_entropy(model(x), y)
        if tc.method == "l1":
            out = out + tc.l1_alpha * l1_penalty(model)
        elif tc.method == "bitslice-l1" and stage != "float":
            out = out + tc.bitslice_alpha * bitslice_penalty(model, tc.crossbar)
        return out
    return loss


def atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _log(tc: TrainConfig, msg: str) -> None:
    if not (tc.progress and sys.stderr.isatty()):
        print(msg, file=sys.stderr, flush=True)


def train(tc: TrainConfig, data: ImageData, out: Path) -> nn.Module:
    """Run (or resume) every stage of ``tc`` on ``data``, saving state to ``out`` after each epoch.

    Returns:
        The trained model (in ``qat`` mode, eval), also saved as ``out/model.safetensors``.
    """
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps(tc.to_dict(), indent=2, sort_keys=True) + "\n")
    x_all, y_all = data.x_train, data.y_train
    if tc.max_train is not None:
        x_all, y_all = x_all[:tc.max_train], y_all[:tc.max_train]
    model = init_model(tc.model, tc.seed)
    gen = torch.Generator().manual_seed(tc.seed * 7919 + 1)
    progress = {"stage": 0, "epoch": 0, "pruned": 0.0, "calibrated": False}
    opt_state = None
    state_path = out / STATE_FILE
    if state_path.exists():
        st = torch.load(state_path, weights_only=True)
        if st["config"] != json.dumps(tc.to_dict(), sort_keys=True):
            raise ValueError(f"{state_path}: saved by another training config; use a fresh --out")
        model.load_state_dict(st["model"])
        gen.set_state(st["generator"])
        progress = json.loads(st["progress"])
        opt_state = st["optimizer"] or None
        _log(tc, f"[reram train] resuming at stage {progress['stage']} epoch {progress['epoch']}")
    train_noise = tc.noise()
    for si, (stage, epochs) in enumerate(tc.stages):
        if si < progress["stage"]:
            continue
        if stage != "float":
            if not progress["calibrated"]:
                calibrate(model, x_all[:CALIB_IMAGES])
                progress["calibrated"] = True
            set_mode(model, "noisy" if tc.method == "resna" else "qat")
            if tc.method == "resna":
                attach(model, tc.crossbar, train_noise, seed=tc.seed * 31 + si,
                       last_layer_noise_scale=tc.last_layer_noise_scale)
        if stage == "finetune" and not progress.get("pruned_done"):
            progress["pruned"] = prune(model, tc.prune_codes)
            if tc.adc_budget or tc.snap:
                project_model(model, tc.crossbar if tc.adc_budget else _unbudgeted(tc.crossbar), tc.snap)
            progress["pruned_done"] = True
        lr = tc.lr if stage == "float" else tc.lr / 4
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=WEIGHT_DECAY)
        if opt_state is not None:
            opt.load_state_dict(opt_state)
            opt_state = None
        steps_per_epoch = math.ceil(len(y_all) / tc.batch_size)
        total = max(1, round(epochs * steps_per_epoch)) if epochs > 0 else 0
        n_epochs = math.ceil(total / steps_per_epoch) if total else 0
        loss_fn = _loss_fn(model, tc, stage)
        for epoch in range(progress["epoch"], n_epochs):
            model.train()
            if tc.method == "resna" and stage != "float":
                # per-epoch noise stream: a resumed run draws what an uninterrupted one would
                for _, layer in crossbar_layers(model):
                    layer.session.read_generator.manual_seed(tc.seed * 1_000_003 + si * 1009 + epoch * 17
                                                             + id_of(layer, model))
            bar = tqdm(total=min(steps_per_epoch, total - epoch * steps_per_epoch), desc=f"{stage} {epoch + 1}",
                       disable=not (tc.progress and sys.stderr.isatty()), leave=False)
            step0 = epoch * steps_per_epoch
            last = float("nan")
            for i, idx in enumerate(_batches(len(y_all), tc.batch_size, gen)):
                step = step0 + i
                if step >= total:
                    break
                for g in opt.param_groups:
                    g["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * step / total))
                loss = loss_fn(x_all[idx], y_all[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if (tc.adc_budget or tc.snap) and stage == "finetune":
                    project_model(model, tc.crossbar if tc.adc_budget else _unbudgeted(tc.crossbar), tc.snap)
                last = loss.detach().item()
                bar.update(1)
                bar.set_postfix(loss=f"{last:.3f}")
            bar.close()
            progress.update(stage=si, epoch=epoch + 1)
            if epoch + 1 == n_epochs:
                progress.update(stage=si + 1, epoch=0)
            atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict() if epoch + 1 < n_epochs
                                else None, "generator": gen.get_state(), "progress": json.dumps(progress),
                                "config": json.dumps(tc.to_dict(), sort_keys=True)}, state_path)
            _log(tc, f"[reram train] {tc.method} {stage} epoch {epoch + 1}/{n_epochs} loss {last:.4f}")
        if progress["stage"] == si + 1 or n_epochs == 0:
            progress.update(stage=si + 1, epoch=0)
            save_model(model, out / "checkpoints" / f"{stage}.safetensors", tc, {"stage": stage})
    if not progress["calibrated"]:
        calibrate(model, x_all[:CALIB_IMAGES])
    detach_sessions(model)
    set_mode(model, "qat")
    model.eval()
    save_model(model, out / MODEL_FILE, tc, {"stage": "final", "pruned": progress["pruned"]})
    return model


def id_of(layer: nn.Module, model: nn.Module) -> int:
    """The index of ``layer`` among ``model``'s crossbar layers."""
    for i, (_, other) in enumerate(crossbar_layers(model)):
        if other is layer:
            return i
    raise ValueError("layer is not one of the model's crossbar layers")

