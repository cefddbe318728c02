#!/usr/bin/env python
"""Write the two harder digits data sets used in the README (seeded npz files for `--data npz:PATH`).

The default data's digits and train/test split (1,348 / 449 digits), harder:

* ``digits_noisy.npz``: 16x16 digits, background noise 0.3, three bright distractor fragments, 3
  placements per training digit (the default has noise 0.15, no distractors, 9 placements).
* ``digits_scaled.npz``: digits at 8x8 or 16x16 on a 4-pixel grid (the default: 16x16 on an
  8-pixel grid), noise 0.25, two distractors, 4 placements per training digit.

Usage: ``python scripts/make_datasets.py --out DIR [--seed N]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vitforge.sw.data import DigitsVariant, digits_variant, save_npz

VARIANTS = {
    "digits_noisy": DigitsVariant(copies=3, noise=0.3, distractors=3, distractor_gain=0.8, scales=(2,), align=8),
    "digits_scaled": DigitsVariant(copies=4, noise=0.25, distractors=2, distractor_gain=0.8, scales=(1, 2), align=4),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="folder to write the .npz files to")
    p.add_argument("--seed", type=int, default=0, help="seed of placements, noise and distractors (default 0)")
    args = p.parse_args()
    for name, variant in VARIANTS.items():
        arrays = digits_variant(variant, seed=args.seed)
        path = save_npz(args.out / f"{name}.npz", **arrays)
        x = arrays["x"]
        print(f"{path}: {len(x)} training and {len(arrays['x_test'])} test images of {x.shape[1]}x{x.shape[2]}, "
              f"{variant}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
