"""The board backend against simulated gateware, on an artifact's test images.

:func:`compare_on_rtl` runs the artifact's first test images through the board backend's own code
(``Runtime(artifact, "board")`` on the PYNQ stand-in of :mod:`.standin`) and through the rtl
backend's driver on the same Verilator model, and reports how many logits equal the golden
model's and whether cycles (total and per layer) equal the rtl backend's.
``python scripts/bench_board.py --artifact DIR --images 8`` prints it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from vitforge.sw.data import load_data
from vitforge.sw.runtime import AcceleratorBackend, ArtifactProgram, Runtime

from .standin import make_standin


def compare_on_rtl(artifact: Path, images: int, log=None) -> dict:
    """Board backend (PYNQ stand-in over the RTL) against the golden model and the rtl backend.

    Args:
        artifact: the artifact directory.
        images: how many of its test images (from the data set its manifest records).
        log: called with one line per image (default: stderr).

    Returns:
        ``{"images", "board_exact", "rtl_exact", "cycles_equal", "layer_cycles_equal",
        "cycles_per_image", "board_wall_s_per_image", "rtl_wall_s_per_image", "preset"}``.
    """
    if images < 1:
        raise ValueError(f"images must be at least 1, not {images}")
    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    probe = Runtime(artifact, "golden")
    ds = (probe.manifest.get("extra") or {}).get("dataset") or {}
    data = load_data(ds.get("spec"), seed=ds.get("seed", 0), size=probe.model.config.image_size)
    x = data.x_test[:images]
    dev = make_standin(probe.hw)
    try:
        codes = [probe.input_codes(img) for img in x]
        golden = [probe.golden.run_codes(c)[0] for c in codes]
        rtl = AcceleratorBackend(dev.rtl, probe.hw, ArtifactProgram.load(Path(artifact), probe.manifest), "rtl")
        t0 = time.perf_counter()
        ref = [rtl.infer(c) for c in codes]
        rtl_wall = time.perf_counter() - t0
        board_rows = []
        with Runtime(artifact, "board", device=dev, reg_base=dev.reg_base) as board:
            t0 = time.perf_counter()
            for i, c in enumerate(codes):
                got = board.backend.infer(c)
                board_rows.append(got)
                say(f"[board] image {i}: {'exact' if torch.equal(got.logits, golden[i]) else 'DIFFERS'}, "
                    f"{got.cycles} cycles (rtl {ref[i].cycles})")
            board_wall = time.perf_counter() - t0
    finally:
        dev.close()
    return {
        "preset": probe.preset, "images": images,
        "board_exact": sum(torch.equal(b.logits, g) for b, g in zip(board_rows, golden, strict=True)),
        "rtl_exact": sum(torch.equal(r.logits, g) for r, g in zip(ref, golden, strict=True)),
        "cycles_equal": all(b.cycles == r.cycles for b, r in zip(board_rows, ref, strict=True)),
        "layer_cycles_equal": all(b.layer_cycles == r.layer_cycles for b, r in zip(board_rows, ref, strict=True)),
        "cycles_per_image": sum(b.cycles for b in board_rows) / images,
        "board_wall_s_per_image": round(board_wall / images, 2), "rtl_wall_s_per_image": round(rtl_wall / images, 2),
    }


__all__ = ["compare_on_rtl"]
