"""Suite-wide settings: seeded randomness, one torch thread (2-core CI), hypothesis profiles."""

import os
import random

import numpy as np
import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True)
settings.register_profile("deep", max_examples=2000, deadline=None)
settings.load_profile("deep" if os.environ.get("VITFORGE_DEEP") else "ci")

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 - seeds the legacy global generator that libraries may use
    torch.manual_seed(0)
