"""Plots of a training run (matplotlib, Agg): accuracy against compute and latency, token-keep heatmaps,
learning curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch


def plot_accuracy(points: list[dict], path: Path, x_key: str, x_label: str) -> Path:
    """Accuracy (%) against ``x_key`` for labelled points ``{"label", "top1", x_key}``."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for p in points:
        ax.scatter(p[x_key], p["top1"], s=40)
        ax.annotate(p["label"], (p[x_key], p["top1"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel(x_label)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_keep_heatmaps(images: torch.Tensor, alive: list[torch.Tensor], patch: int, path: Path,
                       blocks: tuple[int, ...]) -> Path:
    """Input images with the patches each selector kept shaded (one row per image).

    Args:
        images: ``(n, C, H, W)``; alive: per selector ``(n, T)`` presence (class token first).
    """
    n, k = images.shape[0], len(alive)
    grid = images.shape[-1] // patch
    fig, axes = plt.subplots(n, k + 1, figsize=(1.6 * (k + 1), 1.6 * n), squeeze=False)
    for i in range(n):
        img = images[i].mean(0).numpy()
        axes[i][0].imshow(img, cmap="gray")
        axes[i][0].set_title("input" if i == 0 else "", fontsize=8)
        for j, a in enumerate(alive):
            keep = a[i, 1:1 + grid * grid].reshape(grid, grid).numpy()
            axes[i][j + 1].imshow(img, cmap="gray")
            axes[i][j + 1].imshow(keep.repeat(patch, 0).repeat(patch, 1), cmap="magma", alpha=0.5, vmin=0, vmax=1)
            if i == 0:
                axes[i][j + 1].set_title(f"kept before block {blocks[j]}", fontsize=7)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_learning_curves(stages: list[dict], path: Path) -> Path:
    """Train and validation loss, and validation accuracy, against steps: one column per stage.

    Args:
        stages: the report's ``stages`` (``name``, ``history`` of ``step``/``train_loss``/``val_loss``/
            ``val_acc``, ``best_step``, ``converged``).
    """
    n = max(1, len(stages))
    fig, axes = plt.subplots(2, n, figsize=(3.0 * n, 4.6), squeeze=False)
    for j, st in enumerate(stages):
        h = st["history"]
        steps = [r["step"] for r in h]
        top, bottom = axes[0][j], axes[1][j]
        top.plot(steps, [r["train_loss"] for r in h], label="train loss")
        top.plot(steps, [r["val_loss"] for r in h], label="val loss")
        bottom.plot(steps, [r["val_acc"] for r in h], color="tab:green", label="val top-1 (%)")
        for ax in (top, bottom):
            ax.axvline(st["best_step"], color="gray", lw=0.8, ls="--")
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
        note = "" if st["converged"] else " (budget hit, not converged)"
        top.set_title(f"{st['name']}{note}", fontsize=8)
        bottom.set_xlabel("step", fontsize=8)
        if j == 0:
            top.legend(fontsize=7)
            bottom.set_ylabel("val top-1 (%)", fontsize=8)
            top.set_ylabel("loss", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
