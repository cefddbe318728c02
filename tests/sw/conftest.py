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
TINY_TRAIN = TrainConfig(seed=0, batch_size=64, dense_steps=6, prune_steps=4, qat_steps=2, eval_every=2,
                         max_train=int(os.environ.get("VITFORGE_TEST_TRAIN_IMAGES", "256")), calib_images=64,
                         progress=False, threads=1)

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


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """``train_to_dir`` on the tiny config: (output dir, report)."""
    from vitforge.sw.workflow import Target, train_to_dir

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("tiny") / "run"
    report = train_to_dir(out, seed=0, target=Target(mac_reduction=0.3), tc=TINY_TRAIN, cfg=TINY, plots=True,
                          log=lambda s: None, eval_limit=TINY_EVAL_IMAGES)
    return out, report


#: A tiny ``train_to_dir`` in a fresh process (kernels are pinned at vitforge's import, so each
#: profile needs its own process). argv: out dir, config JSON, train JSON, the line prefix at
#: which the process kills itself with SIGKILL ('' = never).
TINY_CHILD = """
import json, os, signal, sys
from pathlib import Path
import vitforge
from vitforge.sw.train import TrainConfig
from vitforge.sw.vit import ViTConfig
from vitforge.sw.workflow import Target, train_to_dir
out, cfg, tc, kill_at = Path(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]

def log(line):
    if kill_at and line.startswith(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)

train_to_dir(out, seed=0, target=Target(mac_reduction=0.3), tc=TrainConfig(**tc), cfg=ViTConfig.from_dict(cfg),
             plots=False, log=log, eval_limit=TINY_EVAL_IMAGES)
print(json.dumps(vitforge.kernels.kernel_status()))
"""


#: Test images the children's golden evaluation uses (the artifact does not depend on it).
CHILD_EVAL_IMAGES = 8


def _start_tiny_child(out, env: dict[str, str], tc: TrainConfig = TINY_TRAIN, kill_at: str = ""):
    """Start :data:`TINY_CHILD` with ``env`` added to the user's environment: a Popen (text pipes)."""
    import json
    import subprocess
    import sys

    from vitforge.kernels import user_environ

    code = TINY_CHILD.replace("TINY_EVAL_IMAGES", str(CHILD_EVAL_IMAGES))
    tc_json = json.dumps({**tc.to_dict(), "progress": None})
    return subprocess.Popen([sys.executable, "-c", code, str(out), json.dumps(TINY.to_dict()), tc_json, kill_at],
                            env={**user_environ(), **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run_tiny_children(jobs: list[tuple]) -> list[tuple[int, str, str]]:
    """Run ``(out, env[, tc, kill_at])`` children side by side: ``(returncode, stdout, stderr)`` each."""
    procs = [_start_tiny_child(*job) for job in jobs]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=900)
        results.append((p.returncode, out, err))
    return results


def _blob_hashes(artifact) -> dict[str, str]:
    """SHA-256 of every blob in an artifact's manifest."""
    import json

    manifest = json.loads((artifact / "manifest.json").read_text())
    return {name: b["sha256"] for name, b in manifest["blobs"].items()}


@pytest.fixture
def tiny_children():
    """``run([(out, env[, tc, kill_at]), ...])``: tiny trainings in child processes, side by side."""
    return _run_tiny_children


@pytest.fixture
def blob_hashes():
    """``hashes(artifact_dir) -> {blob: sha256}`` from the manifest."""
    return _blob_hashes
