"""vitforge: hardware-software co-design for 8-bit ViT and in-memory-computing accelerators.

Importing vitforge pins torch's CPU kernels (:mod:`vitforge.kernels`) before anything computes, so that
the same seed gives the same trained weights, and so the same int8 artifact, on other x86 machines.
"""

from . import kernels  # noqa: F401 - pins the kernel profile at import (see vitforge/kernels.py)

__version__ = "0.1.0"
