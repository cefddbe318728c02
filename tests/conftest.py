"""Suite-wide settings: seeded randomness, one torch thread (2-core CI), hypothesis profiles, test tiers.

Tiers: every test runs by default except those marked ``slow`` (deep runs: long training, big RTL
builds, synthesis), which run only with ``VITFORGE_DEEP=1``. This hook is the one place that decides.
"""

import os
import random

import numpy as np
import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True)
settings.register_profile("deep", max_examples=2000, deadline=None)
settings.load_profile("deep" if os.environ.get("VITFORGE_DEEP") == "1" else "ci")

torch.set_num_threads(1)

#: Whether the deep tier runs (``VITFORGE_DEEP=1``).
DEEP = os.environ.get("VITFORGE_DEEP") == "1"


def pytest_collection_modifyitems(config, items):
    """Skip the ``slow`` tests unless ``VITFORGE_DEEP=1``."""
    if DEEP:
        return
    skip = pytest.mark.skip(reason="deep run: set VITFORGE_DEEP=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 - seeds the legacy global generator that libraries may use
    torch.manual_seed(0)
