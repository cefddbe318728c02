"""boards/zcu102/simcheck.py: the board backend on the RTL stand-in, on artifacts' test images.

Default tier: a random int8 ViT exported for the demo preset, on one test image of the default data.
Slow tier (VITFORGE_DEEP=1): the demo flow's trained artifact (trained here, minutes) on 8 test images.
"""

from __future__ import annotations

import pytest

from vitforge.hw.config import get_preset
from vitforge.sw import random_model
from vitforge.sw.export import write_artifact
from vitforge.sw.vit import ViTConfig

pytest.importorskip("pynq", reason="the board extra (pip install 'vitforge[board]') is not installed")
simcheck = pytest.importorskip("vitforge.boards.zcu102.simcheck")

#: The default data's 16x16 digits in 4x4 patches, the demo preset's D and heads, a selector.
MODEL = ViTConfig(image_size=16, patch_size=4, in_chans=1, num_classes=10, embed_dim=64, depth=2, num_heads=4,
                  mlp_ratio=2.0, selector_blocks=(1,), keep_rates=(0.5,))
SEED = 5


def _check(res: dict, images: int) -> None:
    assert res["images"] == images
    assert res["board_exact"] == res["rtl_exact"] == images
    assert res["cycles_equal"] and res["layer_cycles_equal"] and res["cycles_per_image"] > 0


@pytest.mark.rtl
def test_random_artifact_on_the_default_data(tmp_path):
    demo = get_preset("demo")
    image = random_model.random_image(SEED, MODEL)
    im = random_model.random_int_model(SEED, random_model.mixed_threshold(SEED, image, MODEL), MODEL, demo.numerics)
    artifact = write_artifact(im, tmp_path / "artifact", "demo")
    _check(simcheck.compare_on_rtl(artifact, 1, log=lambda s: None), 1)
    with pytest.raises(ValueError, match="images must be at least 1, not 0"):
        simcheck.compare_on_rtl(artifact, 0)


@pytest.mark.slow
def test_demo_artifact_eight_images(tmp_path):
    from vitforge.sw.train import TrainConfig
    from vitforge.sw.workflow import Target, train_to_dir

    train_to_dir(tmp_path / "demo", "demo", 0, Target(), None, "demo", TrainConfig(progress=False), plots=False,
                 log=lambda s: None)
    _check(simcheck.compare_on_rtl(tmp_path / "demo" / "artifact", 8, log=lambda s: None), 8)
