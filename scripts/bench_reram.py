"""Images per second of the crossbar simulator under noise, for ResNet-20 and the demo ViT, against int8.

    python scripts/bench_reram.py [--images 64] [--channels 4] [--json]

Models are freshly initialized (throughput does not depend on the weights' values), calibrated
on training images of the default data, then run on test images: once as the plain int8 model
(``qat`` mode), once on a simulated chip (2-bit cells, 1-bit DAC, 32x32 tiles, 3/3/3/1-bit ADCs,
read noise at 1000 MHz / 400 K, programming variation, RTN). One thread.
"""

from __future__ import annotations

import argparse
import json

import torch

from vitforge.quant.crossbar import CrossbarConfig
from vitforge.sw.data import load_data
from vitforge.sw.reram.bench import bench_model
from vitforge.sw.reram.device import NoiseConfig, OperatingPoint
from vitforge.sw.reram.models import ModelConfig
from vitforge.sw.reram.train import init_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--channels", type=int, default=4, help="ResNet-20 base channels (default 4)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    data = load_data(None)
    cfg = CrossbarConfig(rows=32, cols=32, cell_bits=2, dac_bits=1, adc_bits=(3, 3, 3, 1), prog_sigma=0.1)
    noise = NoiseConfig(op=OperatingPoint(1e9, 400.0))
    out = {}
    for kind in ("resnet20", "vit"):
        model = init_model(ModelConfig(kind=kind, channels=args.channels), 0)
        out[kind] = bench_model(model, data.x_train[:256], data.x_test[:args.images], cfg, noise)
    if args.json:
        print(json.dumps(out, indent=2, sort_keys=True))
        return
    print(f"{'model':<10}{'int8 img/s':>12}{'crossbar img/s':>16}{'slowdown':>10}")
    for kind, r in out.items():
        print(f"{kind:<10}{r['int8_images_per_s']:>12.1f}{r['crossbar_images_per_s']:>16.2f}{r['slowdown']:>10.1f}x")


if __name__ == "__main__":
    main()
