"""Latency-aware multi-stage training: dense float -> token selectors -> 8-bit QAT.

* Stage 1: the dense float model (cross-entropy).
* Stage 2: selectors are inserted one at a time at the blocks :func:`~.latency.choose_schedule`
  picked for the latency target; loss (SPViT's weights) = cross-entropy + 2.0 x mean over
  selectors of (mean keep - target)^2 + 0.5 x KL to the dense teacher + 0.5 x token-feature MSE.
  Decisions are hard Gumbel-softmax masks; afterwards each selector's inference threshold is set
  so that its mean keep rate on training images matches its target.
* Stage 3: 8-bit QAT: calibrate activation scales, then fine-tune with the integer forward and
  the float twins' gradients (cross-entropy + 0.5 x KL to the dense teacher), thresholds
  recalibrated on the quantized scores.

Everything is seeded; with the same seed and thread count the result is bit-identical.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from vitforge.quant.fake import set_mode
from vitforge.quant.selector import SCORE_FMT

from .data import ImageData
from .latency import LatencyModel, MacLatency, Schedule, choose_schedule
from .vit import Trace, VisionTransformer, ViTConfig

KEEP_LOSS_WEIGHT = 2.0
KL_WEIGHT = 0.5
FEATURE_WEIGHT = 0.5
WARMUP_STEPS = 30


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters (defaults: the demo preset on the default data)."""

    seed: int = 0
    batch_size: int = 64
    dense_epochs: float = 3.0
    prune_epochs: float = 0.5
    """Epochs after inserting each selector."""
    qat_epochs: float = 0.15
    lr: float = 2e-3
    prune_lr: float = 5e-4
    qat_lr: float = 5e-5
    weight_decay: float = 0.05
    calib_images: int = 512
    threads: int = 1
    max_train: int | None = None
    """Use only the first ``max_train`` training images (tests)."""
    progress: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


def seed_everything(seed: int, threads: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (nothing here draws from it; seeded for user code)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def _batches(n: int, batch: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    perm = torch.randperm(n, generator=gen)
    for i in range(0, n, batch):
        yield perm[i:i + batch]


def _train_x(data: ImageData, tc: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    n = len(data.y_train) if tc.max_train is None else min(tc.max_train, len(data.y_train))
    return data.x_train[:n], data.y_train[:n]


def _cosine(opt: torch.optim.Optimizer, base: float, step: int, total: int) -> None:
    """Linear warm-up over :data:`WARMUP_STEPS` (at most a tenth of the run), then cosine decay."""
    warm = min(WARMUP_STEPS, total // 10)
    if step < warm:
        lr = base * (step + 1) / warm
    else:
        lr = 0.5 * base * (1 + math.cos(math.pi * (step - warm) / max(total - warm, 1)))
    for g in opt.param_groups:
        g["lr"] = lr


def _fit(
    model: VisionTransformer, data: ImageData, tc: TrainConfig, epochs: float, lr: float,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], desc: str, seed_offset: int,
) -> None:
    """AdamW with a cosine schedule over ``epochs`` (fractional: a prefix of the last epoch)."""
    x, y = _train_x(data, tc)
    gen = torch.Generator().manual_seed(tc.seed * 1000 + seed_offset)
    steps_per_epoch = math.ceil(len(y) / tc.batch_size)
    total = max(1, round(epochs * steps_per_epoch))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=tc.weight_decay)
    model.train()
    step = 0
    bar = tqdm(total=total, desc=desc, disable=not tc.progress, leave=False)
    while step < total:
        for idx in _batches(len(y), tc.batch_size, gen):
            if step >= total:
                break
            _cosine(opt, lr, step, total)
            loss = loss_fn(x[idx], y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()


@torch.no_grad()
def evaluate(model: VisionTransformer, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> dict:
    """Top-1 accuracy (%) and mean tokens per block (batched, masked pruning)."""
    model.eval()
    correct, tokens = 0, torch.zeros(model.cfg.depth, dtype=torch.float64)
    for i in range(0, len(y), batch):
        tr = Trace()
        logits = model(x[i:i + batch], trace=tr)
        correct += int((logits.argmax(-1) == y[i:i + batch]).sum())
        tokens += torch.tensor(block_token_counts(model, tr, len(logits)), dtype=torch.float64) * len(logits)
    return {"top1": 100.0 * correct / len(y), "tokens": (tokens / len(y)).tolist()}


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


def train_dense(cfg: ViTConfig, data: ImageData, tc: TrainConfig) -> VisionTransformer:
    """Stage 1: the dense float model."""
    torch.manual_seed(tc.seed)
    model = VisionTransformer(cfg.with_selectors((), ()))
    model.set_poly(False)

    def loss_fn(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(xb), yb, label_smoothing=0.1)

    _fit(model, data, tc, tc.dense_epochs, tc.lr, loss_fn, "stage 1 dense", 1)
    return model


def _pruned_from(dense: VisionTransformer, schedule: Schedule) -> VisionTransformer:
    torch.manual_seed(0)
    cfg = dense.cfg.with_selectors(schedule.selector_blocks, schedule.keep_rates)
    model = VisionTransformer(cfg, dense.numerics)
    model.set_poly(False)
    missing, unexpected = model.load_state_dict(dense.state_dict(), strict=False)
    if unexpected or any(not k.startswith("selectors.") for k in missing):
        raise RuntimeError(f"dense weights do not fit the pruned model: missing {missing}, unexpected {unexpected}")
    return model


def train_selectors(
    dense: VisionTransformer, schedule: Schedule, data: ImageData, tc: TrainConfig
) -> VisionTransformer:
    """Stage 2: insert the selectors one by one, distilling from the dense model."""
    model = _pruned_from(dense, schedule)
    teacher = dense.eval()
    n_patches = model.cfg.num_patches
    rates = torch.tensor(schedule.keep_rates)
    model.set_decision("gumbel")

    def loss_fn(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        tr = Trace()
        logits = model(xb, trace=tr)
        with torch.no_grad():
            ttr = Trace()
            t_logits = teacher(xb, trace=ttr)
        keep = torch.stack([a[:, 1:1 + n_patches].mean(1).mean() for a in tr.alive])
        keep_loss = ((keep - rates[: len(keep)]) ** 2).mean()
        alive = tr.alive[-1][:, : model.cfg.num_tokens, None]
        feat = (((tr.tokens[:, : model.cfg.num_tokens] - ttr.tokens) ** 2) * alive).sum()
        feat = feat / (alive.sum() * tr.tokens.shape[-1]).clamp(min=1.0)
        return (F.cross_entropy(logits, yb) + KEEP_LOSS_WEIGHT * keep_loss
                + KL_WEIGHT * _kl(logits, t_logits) + FEATURE_WEIGHT * feat)

    for k in range(1, len(schedule.selector_blocks) + 1):
        model.active_selectors = k
        _fit(model, data, tc, tc.prune_epochs, tc.prune_lr, loss_fn, f"stage 2 selector {k}", 10 + k)
    model.set_decision("threshold")
    calibrate_thresholds(model, _train_x(data, tc)[0][: tc.calib_images])
    return model


@torch.no_grad()
def calibrate_thresholds(model: VisionTransformer, x: torch.Tensor, batch: int = 256) -> tuple[int, ...]:
    """Set each selector's Q0.7 threshold so that its mean cumulative keep rate of the patch
    tokens on ``x`` is closest to its target (selectors in order; ties: the higher threshold)."""
    model.eval()
    model.set_decision("threshold")
    n = model.cfg.num_patches
    blocks = model.cfg.selector_blocks
    thresholds = []
    for k, b in enumerate(blocks):
        fused, alive = [], []
        for i in range(0, len(x), batch):
            tr = Trace()
            model(x[i:i + batch], trace=tr)
            f = tr.fused[k][:, 1:1 + n]
            prev = tr.alive[k - 1][:, 1:1 + n] if k else torch.ones_like(f)
            fused.append(torch.floor(f.to(torch.float64) * (1 << SCORE_FMT.frac) + 1e-9))
            alive.append(prev > 0.5)
        f, a = torch.cat(fused), torch.cat(alive)
        rates = torch.stack([((f >= t) & a).to(torch.float64).mean() for t in range(SCORE_FMT.qmax + 1)])
        err = (rates - model.cfg.keep_rates[k]).abs()
        best = int(torch.nonzero(err <= err.min() + 1e-12).max())
        model.selectors[str(b)].threshold = best
        thresholds.append(best)
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


def train_qat(pruned: VisionTransformer, teacher: VisionTransformer, data: ImageData,
              tc: TrainConfig) -> VisionTransformer:
    """Stage 3: 8-bit QAT of the pruned model with the integer forward."""
    model = copy.deepcopy(pruned)
    model.set_poly(model.cfg.poly)
    calib = _train_x(data, tc)[0][: tc.calib_images]
    calibrate_quant(model, calib)
    calibrate_thresholds(model, calib)
    model.set_decision("threshold")

    def loss_fn(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        logits = model(xb)
        with torch.no_grad():
            t_logits = teacher(xb)
        return F.cross_entropy(logits, yb) + KL_WEIGHT * _kl(logits, t_logits)

    if tc.qat_epochs > 0:
        _fit(model, data, tc, tc.qat_epochs, tc.qat_lr, loss_fn, "stage 3 QAT", 20)
        calibrate_thresholds(model, calib)
    return model


@dataclass
class PipelineResult:
    dense: VisionTransformer
    pruned: VisionTransformer
    qat: VisionTransformer
    schedule: Schedule
    metrics: dict


def run_pipeline(
    cfg: ViTConfig, data: ImageData, tc: TrainConfig, target_ms: float, latency: LatencyModel | None = None,
    log: Callable[[str], None] = print,
) -> PipelineResult:
    """All three stages for the latency target ``target_ms`` (see the module docstring).

    ``latency``: the model ``target_ms`` is stated in (sw/latency.py: ``CycleLatency`` for a hardware
    preset, as ``vitforge train --latency-target-ms`` uses; default the ``MacLatency`` proxy).

    Seeds torch, uses ``tc.threads`` threads and deterministic algorithms while it runs, and
    restores the previous thread count and determinism setting afterwards.
    """
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    seed_everything(tc.seed, tc.threads)
    try:
        return _run_pipeline(cfg, data, tc, target_ms, latency or MacLatency(), log)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def _run_pipeline(cfg: ViTConfig, data: ImageData, tc: TrainConfig, target_ms: float, latency: LatencyModel,
                  log: Callable[[str], None]) -> PipelineResult:
    schedule = choose_schedule(cfg, target_ms, latency)
    log(f"schedule: selectors before blocks {schedule.selector_blocks}, keep rates {schedule.keep_rates}, "
        f"modeled {schedule.latency_ms:.4g} ms (dense {schedule.dense_latency_ms:.4g} ms)")
    dense = train_dense(cfg, data, tc)
    m_dense = evaluate(dense, data.x_test, data.y_test)
    log(f"stage 1 dense float: top1 {m_dense['top1']:.2f}%")
    pruned = train_selectors(dense, schedule, data, tc)
    m_pruned = evaluate(pruned, data.x_test, data.y_test)
    log(f"stage 2 pruned float: top1 {m_pruned['top1']:.2f}%, thresholds {pruned.cfg.thresholds}, "
        f"tokens/block {[round(t, 1) for t in m_pruned['tokens']]}")
    qat = train_qat(pruned, dense, data, tc)
    m_qat = evaluate(qat, data.x_test, data.y_test)
    log(f"stage 3 int8 QAT: top1 {m_qat['top1']:.2f}%, thresholds {qat.cfg.thresholds}")
    metrics = {"dense": m_dense, "pruned": m_pruned, "qat": m_qat}
    return PipelineResult(dense, pruned, qat, schedule, metrics)
