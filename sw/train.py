"""Latency-aware multi-stage training: dense float -> token selectors -> 8-bit QAT, each stage to convergence.

* Stage 1: the dense float model (cross-entropy).
* Stage 2: selectors are inserted one at a time at the blocks :func:`~.latency.choose_schedule`
  picked for the latency target; loss (SPViT's weights) = cross-entropy + 2.0 x mean over
  selectors of (mean keep - target)^2 + 0.5 x KL to the dense teacher + 0.5 x token-feature MSE.
  Decisions are hard Gumbel-softmax masks; afterwards each selector's inference threshold is set
  so that its mean keep rate on (the first ``calib_images``) validation images matches its target.
* Stage 3: 8-bit QAT: calibrate activation scales, then fine-tune with the integer forward and
  the float twins' gradients (cross-entropy + 0.5 x KL to the dense teacher), thresholds
  recalibrated on the quantized scores.

The frozen dense teacher's logits and tokens are computed once per image for stages 2 and 3
(:class:`Teacher`) and looked up at every step and check, with the values a forward per step
would give.

Every stage runs the same loop (:func:`fit`) on the training images less a fixed validation split
(:func:`~.data.validation_split`). The dense and QAT stages: a warm-up, a constant learning rate
while the model keeps improving (checked every ``eval_every`` steps; ``patience`` checks without
an improvement of ``min_delta`` in the validation loss end it, once a quarter of the constant
phase's budget is done, the model beats chance by :data:`CHANCE_MARGIN` points and its validation
accuracy is no longer climbing by :data:`ACC_CLIMB_POINTS`), then a cosine decay over
:data:`DECAY_FRACTION` of the steps so far. Each selector insertion: a warm-up, then a cosine
decay over its whole budget (a selector that has just started to drop tokens raises the loss
before it lowers it, so patience would keep the checkpoint that had not learnt to prune). The
checkpoint with the best validation loss is kept. Budgets are optimizer steps, by default scaled
to the data set's size (:func:`auto_steps`). A stage that reaches its budget while its
validation loss is still falling or its accuracy still climbing has not converged:
:class:`StageResult` says so and the pipeline warns, naming the flag that gives the stage more
steps.

With ``state_dir`` each stage saves its state (weights, optimizer, data order, RNG, history) at
every validation check and at its end; a run started again on the same directory continues
where it stopped and gives the same bytes as a run that was never interrupted.

Everything is seeded; with the same seed, thread count and kernel profile (vitforge/kernels.py)
the result is bit-identical.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from vitforge.kernels import kernel_status
from vitforge.quant.fake import set_mode
from vitforge.quant.selector import SCORE_FMT

from .data import ImageData, Split, validation_split
from .latency import LatencyModel, MacLatency, Schedule, choose_schedule
from .vit import Trace, VisionTransformer, ViTConfig

KEEP_LOSS_WEIGHT = 2.0
KL_WEIGHT = 0.5
FEATURE_WEIGHT = 0.5
WARMUP_STEPS = 30
#: The decay phase lasts this fraction of the steps taken before it (warm-up + constant).
DECAY_FRACTION = 0.25
#: When ``eval_every`` is not given: a validation check every quarter pass over the training
#: images, and at least :data:`MIN_CHECKS_PER_BUDGET` per budget (but not more often than every
#: :data:`MIN_EVAL_EVERY` steps).
CHECKS_PER_PASS = 4
MIN_CHECKS_PER_BUDGET = 8
MIN_EVAL_EVERY = 5
#: Gradient-norm clip of every stage.
CLIP_NORM = 1.0
#: Patience may end the constant phase only after this fraction of the budget (a hard data set
#: can sit at chance level for a while before it starts to learn).
MIN_CONSTANT_FRACTION = 0.25
#: Nor while the best validation accuracy is within this many points of always answering the
#: validation set's most frequent class: a plateau at chance is not convergence (if it lasts, the
#: stage runs into its budget and says it did not converge).
CHANCE_MARGIN = 10.0
#: Nor while validation accuracy is still climbing: the mean of the checks of the last pass over
#: the training images (at least ``patience`` checks) above the mean of the pass before by more
#: than this many points (a small validation set's loss is noisy; a model still learning fast
#: shows it in its accuracy trend).
ACC_CLIMB_POINTS = 2.0
#: QAT's forward is the integer path (a QAT check image costs 25 dense ones), so its stage checks
#: the validation set fewer times (this many per budget) on fewer images (at most
#: :data:`QAT_VAL_IMAGES`; its checks choose between two checkpoints).
QAT_CHECKS = 2
QAT_VAL_IMAGES = 256
#: The learning-rate schedules of :func:`fit`.
SCHEDULES = ("plateau", "cosine")
#: Each selector insertion checks the validation set this many times (on at most ``calib_images``):
#: its schedule needs no patience, the checks pick the checkpoint and judge convergence.
PRUNE_CHECKS = 4
#: The selector stages' schedule: a decay from the start of each insertion (see :func:`train_selectors`).
PRUNE_SCHEDULE = "cosine"
#: Fixed seed of the validation passes of stages with random decisions (Gumbel noise).
VAL_NOISE_SEED = 7
#: The teacher's outputs are cached (:class:`Teacher`) while its token features take at most this
#: many bytes (the default data: 190 MB; CIFAR-10 at the demo preset's 65 tokens: 750 MB).
TEACHER_CACHE_BYTES = 2 << 30


@dataclass(frozen=True)
class StageBudget:
    """How a stage's step budget follows the data: ``clamp(ceil(passes * n / batch), min_steps, max_steps)``."""

    passes: float
    min_steps: int
    max_steps: int

    def __post_init__(self) -> None:
        if not self.passes > 0:
            raise ValueError(f"passes must be positive, not {self.passes!r}")
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, not {self.min_steps}, {self.max_steps}")

    def steps(self, n_images: int, batch: int) -> int:
        return min(self.max_steps, max(self.min_steps, math.ceil(self.passes * n_images / batch)))


#: Default budgets. Dense: up to 6 passes, at least 800 steps (small or hard data sets need
#: many passes; patience ends the stage earlier where the validation loss settles). Selectors:
#: half a pass each, at least 300 steps (a selector needs that many to learn which tokens to
#: drop and the blocks after it to work without them; on 3,639 noisy images 60 steps left the
#: pruned model 8 points below dense, and at the keep rates the cycle model asks for on ``demo``
#: (0.35, 0.2) 300 steps gave the int8 pruned model 1.5-2.5 points more than 150 on the default
#: data and on both harder sets of the README). QAT: short (its forward is the integer path).
DENSE_BUDGET = StageBudget(passes=6.0, min_steps=800, max_steps=30000)
PRUNE_BUDGET = StageBudget(passes=0.5, min_steps=300, max_steps=3000)
QAT_BUDGET = StageBudget(passes=0.15, min_steps=20, max_steps=600)


def auto_steps(budget: StageBudget, n_images: int, batch: int) -> int:
    """The default step budget of a stage on ``n_images`` training images."""
    return budget.steps(n_images, batch)


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters (defaults: the demo preset; every field is a ``vitforge train`` flag).

    Budgets (``*_steps``) are optimizer steps; None scales the stage's default budget
    (:data:`DENSE_BUDGET`, ...) to the number of training images. ``prune_steps`` is per selector.
    ``patience``: validation checks without a relative improvement of ``min_delta`` in the
    validation loss that end a stage's constant phase. ``eval_every``: steps between checks (None:
    :func:`default_eval_every`).
    """

    seed: int = 0
    batch_size: int = 64
    val_fraction: float = 0.1
    dense_steps: int | None = None
    prune_steps: int | None = None
    qat_steps: int | None = None
    patience: int = 3
    min_delta: float = 0.01
    eval_every: int | None = None
    val_images: int = 1024
    """At most this many validation images in the checks during a stage (all of them for thresholds)."""
    lr: float = 2e-3
    prune_lr: float = 5e-4
    qat_lr: float = 5e-5
    weight_decay: float = 0.05
    calib_images: int = 512
    threads: int = 1
    """Torch threads while training. The result depends on the count, not on the machine. More
    threads are faster only on cores nothing else uses: a second thread made a dense step 1.4x
    faster on 2 idle cores, and 1.5-3x slower while one other process ran (OpenMP's threads wait
    for each other at every kernel)."""
    max_train: int | None = None
    """Use only the first ``max_train`` training images (tests)."""
    progress: bool | None = None
    """None: bars when stderr is a terminal, otherwise one line per validation check; True: bars;
    False: neither (the per-stage summaries are still logged)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), not {self.val_fraction!r}")
        for name in ("dense_steps", "prune_steps", "qat_steps", "eval_every"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < (0 if name == "qat_steps" else 1)):
                raise ValueError(f"{name} must be a positive integer or None, not {v!r}")
        for name in ("patience", "batch_size", "val_images", "calib_images", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)!r}")
        for name in ("lr", "prune_lr", "qat_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)!r}")
        if not 0.0 <= self.min_delta < 1.0:
            raise ValueError(f"min_delta must be in [0, 1), not {self.min_delta!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def progress_mode(self) -> str:
        """``"bars"``, ``"lines"`` or ``"off"`` (see ``progress``)."""
        if self.progress is None:
            return "bars" if sys.stderr.isatty() else "lines"
        return "bars" if self.progress else "off"


#: The ``vitforge train`` flag that sets each stage's budget (named in non-convergence warnings).
BUDGET_FLAGS = {"dense": "--dense-steps", "prune": "--prune-steps", "qat": "--qat-steps"}


def seed_everything(seed: int, threads: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (nothing here draws from it; seeded for user code)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


@dataclass
class StageResult:
    """What one stage's loop did.

    Attributes:
        name: ``dense``, ``prune1``.., ``qat``. budget: its step budget; steps: steps taken.
        stopped: ``"patience"`` (validation loss stopped improving) or ``"budget"``.
        converged: False when the budget ended the constant phase while the validation loss was
            still improving by more than ``min_delta`` over the last ``patience`` checks.
        best_step, best_val_loss, best_val_acc: the kept checkpoint.
        history: one dict per check: ``step``, ``lr``, ``train_loss`` (mean since the last check),
            ``val_loss``, ``val_acc`` (%).
    """

    name: str
    budget: int
    steps: int = 0
    stopped: str = "budget"
    converged: bool = True
    best_step: int = 0
    best_val_loss: float = math.inf
    best_val_acc: float = 0.0
    history: list[dict] = field(default_factory=list)
    finished: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Loop:
    """The loop's position, saved with each checkpoint."""

    step: int = 0
    decay_start: int | None = None
    decay_len: int = 0
    since_best: int = 0
    """Checks since the validation loss last fell ``min_delta`` below ``ref_loss``."""
    ref_loss: float = math.inf
    """The validation loss at the last significant improvement."""
    loss_sum: float = 0.0
    loss_count: int = 0
    epoch_pos: int = 0


def _warmup_steps(budget: int) -> int:
    """:data:`WARMUP_STEPS`, at most a tenth of the budget."""
    return max(1, min(WARMUP_STEPS, budget // 10))


def _lr_at(base: float, step: int, budget: int, decay_start: int | None, decay_len: int) -> float:
    """Warm-up over :func:`_warmup_steps`, constant, then cosine to 0 over ``decay_len`` steps."""
    warm = _warmup_steps(budget)
    if decay_start is None or step < decay_start:
        return base * min(1.0, (step + 1) / warm)
    t = (step - decay_start) / max(decay_len, 1)
    return 0.5 * base * (1 + math.cos(math.pi * min(t, 1.0)))


def _decay_len(decay_start: int, budget: int) -> int:
    return max(1, min(budget - decay_start, math.ceil(DECAY_FRACTION * decay_start)))


class _Checkpoint:
    """One stage's saved state: ``DIR/NAME.safetensors`` (tensors) and ``DIR/NAME.json`` (the rest),
    each written to a temporary file and renamed. The JSON goes last and records the tensor
    file's size, so a pair torn by a crash between the two renames is ignored."""

    def __init__(self, folder: Path | None, name: str) -> None:
        self.folder, self.name = folder, name

    @property
    def enabled(self) -> bool:
        return self.folder is not None

    def paths(self) -> tuple[Path, Path]:
        assert self.folder is not None
        return self.folder / f"{self.name}.safetensors", self.folder / f"{self.name}.json"

    def save(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        tpath, jpath = self.paths()
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = tpath.with_suffix(".safetensors.tmp")
        save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(tmp))
        os.replace(tmp, tpath)
        meta = {**meta, "tensor_bytes": tpath.stat().st_size}
        tmp = jpath.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta, sort_keys=True))
        os.replace(tmp, jpath)

    def load(self) -> tuple[dict[str, torch.Tensor], dict] | None:
        if not self.enabled:
            return None
        tpath, jpath = self.paths()
        if not (tpath.is_file() and jpath.is_file()):
            return None
        meta = json.loads(jpath.read_text())
        if meta.get("tensor_bytes") != tpath.stat().st_size:
            return None
        return load_file(str(tpath)), meta


def _opt_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    sd = opt.state_dict()
    tensors = {f"opt.{i}.{k}": v for i, st in sd["state"].items() for k, v in st.items()}
    return tensors, sd["param_groups"]


def _opt_load(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list) -> None:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, i, k = key.split(".", 2)
            state.setdefault(int(i), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": groups})


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


#: A stage's objective on a batch ``(x, y, key)``: ``(loss, logits)``. ``key`` ``(B,)`` int64 names
#: the batch's images: their rows in the stage's fit images, or ``len(fit) + i`` for the i-th
#: validation image (what :class:`Teacher` looks its cached outputs up by).
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def _validate(model: VisionTransformer, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor,
              batch: int, key_offset: int) -> tuple[float, float]:
    """Mean loss and top-1 (%) of the stage's objective on ``x`` in training mode (the training
    decisions), with the RNG forked and seeded so that validation draws nothing from training's.
    ``key_offset``: the key of ``x[0]`` (see :data:`LossFn`)."""
    total, correct = 0.0, 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(VAL_NOISE_SEED)
        for i in range(0, len(y), batch):
            key = torch.arange(key_offset + i, key_offset + min(i + batch, len(y)))
            loss, logits = loss_fn(x[i:i + batch], y[i:i + batch], key)
            total += float(loss) * len(logits)
            correct += int((logits.argmax(-1) == y[i:i + batch]).sum())
    return total / len(y), 100.0 * correct / len(y)


class _Reporter:
    """Progress: a tqdm bar on a terminal, else one line per validation check."""

    def __init__(self, name: str, budget: int, start: int, mode: str, log: Callable[[str], None]) -> None:
        self.name, self.budget, self.log, self.mode = name, budget, log, mode
        self.bar = tqdm(total=budget, initial=start, desc=f"stage {name}", leave=False) if mode == "bars" else None

    def step(self, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    def check(self, rec: dict, best: float, phase: str) -> None:
        line = (f"{self.name} step {rec['step']}/{self.budget} ({phase}): train loss {rec['train_loss']:.4f}, "
                f"val loss {rec['val_loss']:.4f} (best {best:.4f}), val acc {rec['val_acc']:.2f}%")
        if self.bar is not None:
            self.bar.set_description_str(f"stage {self.name} val {rec['val_acc']:.1f}%")
        elif self.mode == "lines":
            self.log(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def fit(
    model: VisionTransformer, split: Split, tc: TrainConfig, name: str, budget: int, lr: float,
    loss_fn: LossFn, seed_offset: int, state_dir: Path | None = None, log: Callable[[str], None] = print,
    eval_every: int | None = None, val_limit: int | None = None, schedule: str = "plateau",
) -> StageResult:
    """Train ``model`` in place with AdamW to convergence on the validation loss (module docstring).

    Args:
        split: the fit/validation images; ``budget``: the most optimizer steps; ``lr``: the
            constant-phase learning rate; ``loss_fn(x, y, key) -> (loss, logits)``: the objective, also
            evaluated on the validation images.
        seed_offset: separates the data order of stages (seeded from ``tc.seed``).
        eval_every, val_limit: steps between checks and validation images per check, when not
            ``tc.eval_every`` / ``tc.val_images`` (default: :func:`default_eval_every`).
        state_dir: where the stage's checkpoint lives; an existing one is resumed (or, finished,
            loaded and returned as is).
        schedule: ``"plateau"`` (warm-up, constant until patience or the budget ends it, decay) or
            ``"cosine"`` (warm-up, then a cosine decay over the whole budget; patience does not
            stop it, the checks pick the checkpoint and judge convergence at the end).

    Returns:
        The :class:`StageResult`; ``model`` holds the best validation checkpoint, in eval mode.
    """
    x, y = split.x_fit, split.y_fit
    n_val = val_count(tc, val_limit)
    xv, yv = split.x_val[:n_val], split.y_val[:n_val]
    gen = torch.Generator().manual_seed(tc.seed * 1000 + seed_offset)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=tc.weight_decay)
    eval_every = tc.eval_every or eval_every or default_eval_every(budget, len(y), tc.batch_size)
    stable_cap = max(1, math.floor(budget / (1 + DECAY_FRACTION)))
    min_constant = math.ceil(MIN_CONSTANT_FRACTION * stable_cap)
    chance = 100.0 * float(torch.bincount(yv).max()) / max(len(yv), 1)
    trend = max(tc.patience, round(math.ceil(len(y) / tc.batch_size) / eval_every))
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, not {schedule!r}")
    result, loop = StageResult(name, budget), _Loop()
    if schedule == "cosine":
        loop.decay_start = _warmup_steps(budget)
        loop.decay_len = max(1, budget - loop.decay_start)
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    epoch_state = gen.get_state()
    ckpt = _Checkpoint(state_dir, name)

    saved = ckpt.load()
    if saved is not None:
        tensors, meta = saved
        model.load_state_dict(_prefixed(tensors, "model."))
        best_state = _prefixed(tensors, "best.")
        torch.set_rng_state(tensors["rng.torch"])
        result = StageResult(**meta["result"])
        if result.finished:
            model.eval()
            return result
        _opt_load(opt, tensors, meta["param_groups"])
        epoch_state = tensors["rng.epoch"]
        loop = _Loop(**meta["loop"])
        log(f"{name}: resumed at step {loop.step} from {ckpt.paths()[0]}")

    def save() -> None:
        if not ckpt.enabled:
            return
        tensors, groups = _opt_tensors(opt)
        tensors.update({f"model.{k}": v for k, v in model.state_dict().items()})
        tensors.update({f"best.{k}": v for k, v in best_state.items()})
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.epoch"] = epoch_state
        ckpt.save(tensors, {"result": result.to_dict(), "loop": asdict(loop), "param_groups": groups})

    def check() -> None:
        val_loss, val_acc = _validate(model, loss_fn, xv, yv, tc.batch_size, len(y))
        rec = {"step": loop.step, "lr": opt.param_groups[0]["lr"],
               "train_loss": loop.loss_sum / max(loop.loss_count, 1), "val_loss": val_loss, "val_acc": val_acc}
        result.history.append(rec)
        loop.loss_sum, loop.loss_count = 0.0, 0
        if val_loss < result.best_val_loss:
            result.best_val_loss, result.best_val_acc, result.best_step = val_loss, val_acc, loop.step
            best_state.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        # Significance against the level of the last significant improvement, so that a slow
        # steady fall (less than min_delta per check) still counts once it adds up.
        if val_loss < loop.ref_loss * (1 - tc.min_delta):
            loop.ref_loss, loop.since_best = val_loss, 0
        else:
            loop.since_best += 1
        phase = "constant" if loop.decay_start is None else "decay"
        reporter.check(rec, result.best_val_loss, phase)

    def learning() -> bool:
        return result.best_val_acc >= chance + CHANCE_MARGIN

    def plateaued() -> bool:
        return (loop.since_best >= tc.patience and loop.step >= min_constant and learning()
                and not accuracy_climbing(result.history, trend))

    def constant_ends() -> bool:
        return loop.decay_start is None and (plateaued() or loop.step >= stable_cap)

    reporter = _Reporter(name, budget, loop.step, tc.progress_mode, log)
    model.train()
    while True:
        if constant_ends():
            loop.decay_start = loop.step
            loop.decay_len = _decay_len(loop.decay_start, budget)
            result.stopped = "patience" if plateaued() else "budget"
            result.converged = result.stopped == "patience" or _settled(result.history, tc, learning(), trend)
        end = None if loop.decay_start is None else loop.decay_start + loop.decay_len
        if end is not None and loop.step >= end:
            break
        gen.set_state(epoch_state)
        perm = torch.randperm(len(y), generator=gen)
        while loop.epoch_pos < len(y):
            idx = perm[loop.epoch_pos:loop.epoch_pos + tc.batch_size]
            for g in opt.param_groups:
                g["lr"] = _lr_at(lr, loop.step, budget, loop.decay_start, loop.decay_len)
            loss, _ = loss_fn(x[idx], y[idx], idx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
            opt.step()
            loop.step += 1
            loop.epoch_pos += tc.batch_size
            loop.loss_sum += loss.item()
            loop.loss_count += 1
            reporter.step(loop.loss_sum / loop.loss_count)
            at_end = end is not None and loop.step >= end
            if loop.step % eval_every == 0 or at_end:
                check()
                save()
            if at_end or constant_ends():
                break
        else:
            loop.epoch_pos = 0
            epoch_state = gen.get_state()
    reporter.close()
    if schedule == "cosine":
        result.stopped = "budget"
        result.converged = _settled(result.history, tc, learning(), trend)
    model.load_state_dict(best_state)
    result.steps, result.finished = loop.step, True
    save()
    model.eval()
    return result


def val_count(tc: TrainConfig, val_limit: int | None = None) -> int:
    """How many validation images (the first ones) a stage's checks use: ``tc.val_images``, at most
    ``val_limit``."""
    return tc.val_images if val_limit is None else min(val_limit, tc.val_images)


def default_eval_every(budget: int, n_images: int, batch: int) -> int:
    """Steps between validation checks: a quarter pass, at least 8 per budget, at least 5 steps."""
    per_pass = math.ceil(n_images / batch)
    return max(MIN_EVAL_EVERY, min(per_pass // CHECKS_PER_PASS, budget // MIN_CHECKS_PER_BUDGET))


def _still_improving(history: list[dict], tc: TrainConfig) -> bool:
    """Whether the validation loss is still falling: the best of the last ``patience`` checks beats
    the best before them by more than ``min_delta`` (relative). With ``patience`` checks or fewer,
    the later ones against the first; a single check shows nothing (False)."""
    if len(history) < 2:
        return False
    split = max(1, len(history) - tc.patience)
    before = min(h["val_loss"] for h in history[:split])
    recent = min(h["val_loss"] for h in history[split:])
    return recent < before * (1 - tc.min_delta)


def accuracy_climbing(history: list[dict], window: int) -> bool:
    """Whether validation accuracy is still climbing: the mean of the last ``window`` checks beats
    the mean of the ``window`` before them by more than :data:`ACC_CLIMB_POINTS` (False with fewer
    than ``2 * window`` checks)."""
    if len(history) < 2 * window:
        return False
    recent = sum(h["val_acc"] for h in history[-window:]) / window
    before = sum(h["val_acc"] for h in history[-2 * window:-window]) / window
    return recent > before + ACC_CLIMB_POINTS


def _settled(history: list[dict], tc: TrainConfig, learning: bool, window: int) -> bool:
    """Whether a stage that its budget ended has converged: it beats chance, and neither its
    validation loss (:func:`_still_improving`) nor its accuracy (:func:`accuracy_climbing` over
    ``window`` checks) is still improving."""
    return learning and not _still_improving(history, tc) and not accuracy_climbing(history, window)


@torch.no_grad()
def evaluate(model: VisionTransformer, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> dict:
    """Top-1 accuracy (%), mean tokens per block (batched, masked pruning) and the logits."""
    model.eval()
    correct, tokens, out = 0, torch.zeros(model.cfg.depth, dtype=torch.float64), []
    for i in range(0, len(y), batch):
        tr = Trace()
        logits = model(x[i:i + batch], trace=tr)
        out.append(logits)
        correct += int((logits.argmax(-1) == y[i:i + batch]).sum())
        tokens += torch.tensor(block_token_counts(model, tr, len(logits)), dtype=torch.float64) * len(logits)
    return {"top1": 100.0 * correct / len(y), "tokens": (tokens / len(y)).tolist(), "logits": torch.cat(out)}


def block_token_counts(model: VisionTransformer, trace: Trace, batch: int) -> list[float]:
    """Mean present tokens per block for one traced batch."""
    counts, current, k = [], float(model.cfg.num_tokens), 0
    blocks = model.cfg.selector_blocks[: model.active_selectors]
    for b in range(model.cfg.depth):
        if k < len(blocks) and blocks[k] == b:
            current = float(trace.alive[k].sum()) / batch
            k += 1
        counts.append(current)
    return counts


def _kl(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), log_target=True, reduction="batchmean")


@dataclass(frozen=True)
class Budgets:
    """The step budget of each stage for one data set (``prune`` per selector)."""

    dense: int
    prune: int
    qat: int

    @classmethod
    def resolve(cls, tc: TrainConfig, n_images: int) -> Budgets:
        """``tc``'s budgets, the unset ones scaled to ``n_images`` training images."""
        def pick(given: int | None, default: StageBudget) -> int:
            return given if given is not None else auto_steps(default, n_images, tc.batch_size)
        return cls(pick(tc.dense_steps, DENSE_BUDGET), pick(tc.prune_steps, PRUNE_BUDGET),
                   pick(tc.qat_steps, QAT_BUDGET))


class Teacher:
    """The frozen dense model whose outputs the selector and QAT objectives distil from.

    ``teacher(x, key)`` -> ``(logits (B, classes), tokens (B, T, D))`` float32: the dense model's
    logits and final tokens (``T`` = ``num_tokens``) on the images ``x`` ``(B, C, H, W)`` named
    ``key`` ``(B,)`` int64 (:data:`LossFn`).

    Given ``images`` (the table the keys index: a stage's fit images, then the validation images
    its checks use), the outputs are computed once per image, on first use, in chunks of ``batch``
    images in table order, and looked up by key afterwards. While the teacher is frozen (eval
    mode, not trained; it has no selectors, so its forward draws nothing from the RNG and no data
    is augmented) they are a pure function of the image: the objective sees the values a forward
    at every step would give (a row's result does not depend on the rest of its batch; the test
    checks that equality), and a resumed run sees the same values as an uninterrupted one. Without
    ``images``, or when the token features would take more than :data:`TEACHER_CACHE_BYTES`, it
    runs the teacher on every call.
    """

    def __init__(self, model: VisionTransformer, images: torch.Tensor | None = None, batch: int = 64) -> None:
        if model.cfg.selector_blocks:
            raise ValueError(f"the teacher must be the dense model, not one with selectors {model.cfg.selector_blocks}")
        self.model = model.eval()
        cfg = model.cfg
        nbytes = 0 if images is None else len(images) * cfg.num_tokens * cfg.embed_dim * 4
        self.images = images if images is not None and nbytes <= TEACHER_CACHE_BYTES else None
        self.batch = batch
        self._logits: torch.Tensor | None = None
        self._tokens: torch.Tensor | None = None

    @property
    def cached(self) -> bool:
        """Whether outputs come from the table (else from a forward per call)."""
        return self.images is not None

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's ``(logits, tokens)`` on ``x``, computed now."""
        tr = Trace()
        logits = self.model(x, trace=tr)
        return logits, tr.tokens

    def _fill(self) -> None:
        parts = [self.forward(self.images[i:i + self.batch]) for i in range(0, len(self.images), self.batch)]
        self._logits = torch.cat([p[0] for p in parts])
        self._tokens = torch.cat([p[1] for p in parts])

    def __call__(self, x: torch.Tensor, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.images is None:
            return self.forward(x)
        if self._logits is None:
            self._fill()
        return self._logits[key], self._tokens[key]


def stage_teacher(dense: VisionTransformer, split: Split, tc: TrainConfig) -> Teacher:
    """The :class:`Teacher` of the selector and QAT stages: its table is the fit images, then the
    validation images their checks use (``val_count(tc, tc.calib_images)``)."""
    images = torch.cat([split.x_fit, split.x_val[: val_count(tc, tc.calib_images)]])
    return Teacher(dense, images, tc.batch_size)


def dense_objective(model: VisionTransformer) -> LossFn:
    """Stage 1's objective: cross-entropy with label smoothing 0.1."""
    def loss_fn(xb: torch.Tensor, yb: torch.Tensor, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(xb)
        return F.cross_entropy(logits, yb, label_smoothing=0.1), logits
    return loss_fn


def selector_objective(model: VisionTransformer, teacher: Teacher | VisionTransformer,
                       keep_rates: torch.Tensor) -> LossFn:
    """Stage 2's objective (module docstring) for ``model``'s active selectors, ``keep_rates`` ``(S,)``
    float: their cumulative targets. ``teacher``: the dense model (a :class:`Teacher` caches its outputs)."""
    n_patches = model.cfg.num_patches
    teach = teacher if isinstance(teacher, Teacher) else Teacher(teacher)

    def loss_fn(xb: torch.Tensor, yb: torch.Tensor, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tr = Trace()
        logits = model(xb, trace=tr)
        t_logits, t_tokens = teach(xb, key)
        keep = torch.stack([a[:, 1:1 + n_patches].mean(1).mean() for a in tr.alive])
        keep_loss = ((keep - keep_rates[: len(keep)]) ** 2).mean()
        alive = tr.alive[-1][:, : model.cfg.num_tokens, None]
        feat = (((tr.tokens[:, : model.cfg.num_tokens] - t_tokens) ** 2) * alive).sum()
        feat = feat / (alive.sum() * tr.tokens.shape[-1]).clamp(min=1.0)
        loss = (F.cross_entropy(logits, yb) + KEEP_LOSS_WEIGHT * keep_loss
                + KL_WEIGHT * _kl(logits, t_logits) + FEATURE_WEIGHT * feat)
        return loss, logits
    return loss_fn


def qat_objective(model: VisionTransformer, teacher: Teacher | VisionTransformer) -> LossFn:
    """Stage 3's objective: cross-entropy + ``KL_WEIGHT`` x KL to the dense teacher."""
    teach = teacher if isinstance(teacher, Teacher) else Teacher(teacher)

    def loss_fn(xb: torch.Tensor, yb: torch.Tensor, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(xb)
        t_logits, _ = teach(xb, key)
        return F.cross_entropy(logits, yb) + KL_WEIGHT * _kl(logits, t_logits), logits
    return loss_fn


def train_dense(cfg: ViTConfig, split: Split, tc: TrainConfig, budget: int, state_dir: Path | None = None,
                log: Callable[[str], None] = print) -> tuple[VisionTransformer, StageResult]:
    """Stage 1: the dense float model."""
    torch.manual_seed(tc.seed)
    model = VisionTransformer(cfg.with_selectors((), ()))
    model.set_poly(False)

    res = fit(model, split, tc, "dense", budget, tc.lr, dense_objective(model), 1, state_dir, log)
    return model, res


def pruned_from(dense: VisionTransformer, schedule: Schedule) -> VisionTransformer:
    """A copy of ``dense`` with ``schedule``'s selectors (freshly initialised) inserted."""
    torch.manual_seed(0)
    cfg = dense.cfg.with_selectors(schedule.selector_blocks, schedule.keep_rates)
    model = VisionTransformer(cfg, dense.numerics)
    model.set_poly(False)
    missing, unexpected = model.load_state_dict(dense.state_dict(), strict=False)
    if unexpected or any(not k.startswith("selectors.") for k in missing):
        raise RuntimeError(f"dense weights do not fit the pruned model: missing {missing}, unexpected {unexpected}")
    return model


def train_selectors(
    dense: VisionTransformer, schedule: Schedule, split: Split, tc: TrainConfig, budget: int,
    state_dir: Path | None = None, log: Callable[[str], None] = print, teacher: Teacher | None = None,
) -> tuple[VisionTransformer, list[StageResult]]:
    """Stage 2: insert the selectors one by one (``budget`` steps at most each), distilling from the
    dense model (``teacher``: its cached outputs, default :func:`stage_teacher`); thresholds
    calibrated on the validation images."""
    model = pruned_from(dense, schedule)
    teacher = teacher if teacher is not None else stage_teacher(dense, split, tc)
    model.set_decision("gumbel")
    loss_fn = selector_objective(model, teacher, torch.tensor(schedule.keep_rates))

    results = []
    for k in range(1, len(schedule.selector_blocks) + 1):
        model.active_selectors = k
        results.append(fit(model, split, tc, f"prune{k}", budget, tc.prune_lr, loss_fn, 10 + k, state_dir, log,
                           eval_every=math.ceil(budget / PRUNE_CHECKS), val_limit=tc.calib_images,
                           schedule=PRUNE_SCHEDULE))
    model.set_decision("threshold")
    calibrate_thresholds(model, split.x_val[: tc.calib_images])
    return model, results


@torch.no_grad()
def calibrate_thresholds(model: VisionTransformer, x: torch.Tensor, batch: int = 256) -> tuple[int, ...]:
    """Set each selector's Q0.7 threshold so that its mean cumulative keep rate of the patch
    tokens on ``x`` is closest to its target (selectors in order; ties: the higher threshold).

    A selector's scores depend only on the blocks before it and on the earlier selectors'
    thresholds, not on its own: the images go once through the model's prefix, up to the last
    selector, each batch's tokens held between selectors (the values a whole forward with the
    thresholds set so far gives; tests/sw/test_train_thresholds.py).
    """
    model.eval()
    model.set_decision("threshold")
    n = model.cfg.num_patches
    blocks = model.cfg.selector_blocks
    states = []  # per batch: the tokens entering block ``ran``, their scale, presence, masked
    for i in range(0, len(x), batch):
        xs, s = model.embed(x[i:i + batch])
        states.append((xs, s, torch.ones(xs.shape[:2], dtype=xs.dtype), False))
    ran, thresholds = 0, []
    for k, b in enumerate(blocks):
        sel = model.selectors[str(b)]
        scored = []
        for xs, s, alive, masked in states:
            for block in model.blocks[ran:b]:
                xs, s = block(xs, s, alive if masked else None)
            scored.append((xs, s, alive, sel.scores(xs, s, alive)))
        ran = b
        f = torch.cat([torch.floor(fu[:, 1:1 + n].to(torch.float64) * (1 << SCORE_FMT.frac) + 1e-9)
                       for *_, fu in scored])
        a = torch.cat([alive[:, 1:1 + n] > 0.5 for _, _, alive, _ in scored])
        rates = torch.stack([((f >= t) & a).to(torch.float64).mean() for t in range(SCORE_FMT.qmax + 1)])
        err = (rates - model.cfg.keep_rates[k]).abs()
        best = int(torch.nonzero(err <= err.min() + 1e-12).max())
        sel.threshold = best
        thresholds.append(best)
        if k + 1 < len(blocks):
            states = []
            for xs, s, alive, fu in scored:
                xs, alive = sel.decide(xs, s, alive, fu)
                states.append((xs, s, alive, True))
    model.cfg = replace(model.cfg, thresholds=tuple(thresholds))
    return tuple(thresholds)


@torch.no_grad()
def calibrate_quant(model: VisionTransformer, x: torch.Tensor, batch: int = 256) -> None:
    """Record activation ranges on ``x`` (threshold decisions), then freeze scales: ``"qat"`` mode."""
    model.eval()
    set_mode(model, "calibrate")
    for i in range(0, len(x), batch):
        model(x[i:i + batch])
    set_mode(model, "qat")


def train_qat(pruned: VisionTransformer, teacher: Teacher | VisionTransformer, split: Split, tc: TrainConfig,
              budget: int, state_dir: Path | None = None,
              log: Callable[[str], None] = print) -> tuple[VisionTransformer, StageResult | None]:
    """Stage 3: 8-bit QAT of the pruned model with the integer forward (``budget`` 0: calibration
    only), distilling from the dense model (``teacher``: the model, or its :func:`stage_teacher`)."""
    model = copy.deepcopy(pruned)
    model.set_poly(model.cfg.poly)
    calibrate_quant(model, split.x_fit[: tc.calib_images])
    calibrate_thresholds(model, split.x_val[: tc.calib_images])
    model.set_decision("threshold")
    if not isinstance(teacher, Teacher):
        teacher = stage_teacher(teacher, split, tc)
    loss_fn = qat_objective(model, teacher)

    result = None
    if budget > 0:
        result = fit(model, split, tc, "qat", budget, tc.qat_lr, loss_fn, 20, state_dir, log,
                     eval_every=math.ceil(budget / QAT_CHECKS), val_limit=min(tc.calib_images, QAT_VAL_IMAGES))
        calibrate_thresholds(model, split.x_val[: tc.calib_images])
    return model, result


@dataclass
class PipelineResult:
    dense: VisionTransformer
    pruned: VisionTransformer
    qat: VisionTransformer
    schedule: Schedule
    metrics: dict
    stages: list[StageResult] = field(default_factory=list)
    split: Split | None = None
    warnings: list[str] = field(default_factory=list)
    kernels: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)


def run_pipeline(
    cfg: ViTConfig, data: ImageData, tc: TrainConfig, target_ms: float, latency: LatencyModel | None = None,
    log: Callable[[str], None] = print, state_dir: Path | None = None,
) -> PipelineResult:
    """All three stages for the latency target ``target_ms`` (see the module docstring).

    ``latency``: the model ``target_ms`` is stated in (sw/latency.py: ``CycleLatency`` for a hardware
    preset, as ``vitforge train --latency-target-ms`` uses; default the ``MacLatency`` proxy).
    ``state_dir``: where stages keep their checkpoints; a run on a directory with checkpoints
    resumes from them.

    Seeds torch, uses ``tc.threads`` threads and deterministic algorithms while it runs, and
    restores the previous thread count and determinism setting afterwards. Raises RuntimeError
    when the kernel profile (vitforge/kernels.py) could not be pinned in this process.
    """
    status = kernel_status()
    if not status["pinned"]:
        raise RuntimeError(
            f"torch's CPU kernels are not the {status['profile']!r} profile ({status}): torch ran a kernel "
            "before vitforge was imported. Import vitforge before using torch, or set VITFORGE_KERNELS=native "
            "(results then depend on the CPU)")
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    seed_everything(tc.seed, tc.threads)
    try:
        res = _run_pipeline(cfg, data, tc, target_ms, latency or MacLatency(), log, state_dir)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    res.kernels = status
    return res


def _warn_unconverged(res: StageResult, tc: TrainConfig, log: Callable[[str], None]) -> str | None:
    if res.converged:
        return None
    stage = res.name.rstrip("0123456789")
    h = res.history
    first = h[max(0, len(h) - 1 - tc.patience)] if h else {"val_loss": math.nan, "val_acc": math.nan, "step": 0}
    msg = (f"stage {res.name} did not converge: it used its whole budget of {res.budget} steps while the "
           f"validation loss or accuracy was still improving (loss from {first['val_loss']:.4f} at step "
           f"{first['step']} to {res.best_val_loss:.4f}; accuracy {first['val_acc']:.2f}% -> "
           f"{res.best_val_acc:.2f}%). "
           f"Give it more steps with {BUDGET_FLAGS[stage]} (e.g. {BUDGET_FLAGS[stage]} {2 * res.budget}).")
    log(f"WARNING: {msg}")
    return msg


def _run_pipeline(cfg: ViTConfig, data: ImageData, tc: TrainConfig, target_ms: float, latency: LatencyModel,
                  log: Callable[[str], None], state_dir: Path | None) -> PipelineResult:
    split = validation_split(data, tc.val_fraction, tc.max_train)
    budgets = Budgets.resolve(tc, len(split.y_fit))
    log(f"data: {len(split.y_fit)} training images, {len(split.y_val)} validation, {len(data.y_test)} test; "
        f"budgets (steps): dense {budgets.dense}, per selector {budgets.prune}, QAT {budgets.qat}")
    schedule = choose_schedule(cfg, target_ms, latency)
    log(f"schedule: selectors before blocks {schedule.selector_blocks}, keep rates {schedule.keep_rates}, "
        f"modeled {schedule.latency_ms:.4g} ms (dense {schedule.dense_latency_ms:.4g} ms)")
    seconds, warnings = {}, []
    t0 = time.perf_counter()
    dense, r_dense = train_dense(cfg, split, tc, budgets.dense, state_dir, log)
    seconds["dense"] = time.perf_counter() - t0
    m_dense = evaluate(dense, data.x_test, data.y_test)
    log(f"stage 1 dense float: top1 {m_dense['top1']:.2f}% ({r_dense.steps} steps, stopped by {r_dense.stopped}, "
        f"best val acc {r_dense.best_val_acc:.2f}% at step {r_dense.best_step})")
    t0 = time.perf_counter()
    teacher = stage_teacher(dense, split, tc)  # shared by stages 2 and 3: one teacher pass per image
    pruned, r_prune = train_selectors(dense, schedule, split, tc, budgets.prune, state_dir, log, teacher)
    seconds["prune"] = time.perf_counter() - t0
    m_pruned = evaluate(pruned, data.x_test, data.y_test)
    log(f"stage 2 pruned float: top1 {m_pruned['top1']:.2f}%, thresholds {pruned.cfg.thresholds}, "
        f"tokens/block {[round(t, 1) for t in m_pruned['tokens']]}")
    t0 = time.perf_counter()
    qat, r_qat = train_qat(pruned, teacher, split, tc, budgets.qat, state_dir, log)
    seconds["qat"] = time.perf_counter() - t0
    m_qat = evaluate(qat, data.x_test, data.y_test)
    log(f"stage 3 int8 QAT: top1 {m_qat['top1']:.2f}%, thresholds {qat.cfg.thresholds}")
    stages = [r_dense, *r_prune, *([r_qat] if r_qat is not None else [])]
    for r in stages:
        msg = _warn_unconverged(r, tc, log)
        if msg:
            warnings.append(msg)
    metrics = {"dense": m_dense, "pruned": m_pruned, "qat": m_qat}
    return PipelineResult(dense, pruned, qat, schedule, metrics, stages, split, warnings, seconds=seconds)


def time_dense_steps(cfg: ViTConfig, x: torch.Tensor, y: torch.Tensor, steps: int, seed: int = 0) -> float:
    """Seconds for ``steps`` dense-stage optimizer steps on the batch ``x`` ``(B, C, H, W)``, ``y`` ``(B,)``
    (one warm-up step first): the cost of the kernel profile in force (``scripts/bench_train.py``)."""
    torch.manual_seed(seed)
    model = VisionTransformer(cfg.with_selectors((), ()))
    model.set_poly(False)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - start
