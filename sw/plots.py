"""Plots of a training run (matplotlib, Agg): accuracy against compute and latency, token-keep heatmaps."""

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
