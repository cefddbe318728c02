"""Shared fixtures of the sw tests: one tiny end-to-end training, reused (seeded, single thread)."""

from __future__ import annotations

import os

import pytest
import torch

from vitforge.sw.train import TrainConfig
from vitforge.sw.vit import ViTConfig

#: A ViT small enough to train all stages in seconds: 16x16 canvas, 16 patches + class token.
TINY = ViTConfig(image_size=16, patch_size=4, in_chans=1, num_classes=10, embed_dim=32, depth=3, num_heads=2,
                 mlp_ratio=2.0)
TINY_TRAIN = TrainConfig(seed=0, batch_size=64, dense_epochs=1, prune_epochs=1, qat_epochs=0.25,
                         max_train=int(os.environ.get("VITFORGE_TEST_TRAIN_IMAGES", "256")), calib_images=64,
                         progress=False)

#: Test images the tiny run's golden evaluation uses (recorded in its artifact).
TINY_EVAL_IMAGES = 96


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.fixture
def tiny_cfg() -> ViTConfig:
    return TINY


@pytest.fixture
def tiny_train() -> TrainConfig:
    return TINY_TRAIN


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """``train_to_dir`` on the tiny config: (output dir, report)."""
    from vitforge.sw.workflow import Target, train_to_dir

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("tiny") / "run"
    report = train_to_dir(out, seed=0, target=Target(mac_reduction=0.3), tc=TINY_TRAIN, cfg=TINY, plots=True,
                          log=lambda s: None, eval_limit=TINY_EVAL_IMAGES)
    return out, report
