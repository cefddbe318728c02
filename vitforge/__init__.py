"""vitforge: hardware-software co-design for 8-bit ViT and in-memory-computing accelerators."""

__version__ = "0.1.0"
