"""Whole-model RTL benchmark (``python scripts/bench_rtl.py``): the accelerator on Verilator
(:class:`vitforge.sim.rtl.RtlDevice`) through the runtime's rtl backend.

For a preset it prints, and writes as JSON (and a plot) with ``--out``:

* simulated RTL cycles per second and wall seconds per image;
* cycles per image and per layer, the latency model's cycles (hw/cycles.py, AXI port) and
  its error per layer;
* PE-array MAC utilization per layer: the MACs the layer's GEMM instructions do (at the
  image's token counts) over ``cycles x pe_rows x pe_cols``;
* pruned vs dense: the same model without its selectors runs on the RTL too; the ratio of
  pruned to dense cycles beside the ratio of pruned to dense GMACs (golden model), and the
  cycle saving as a fraction of the GMAC saving (the issue's bar: at least 0.9).

``demo`` runs an artifact (default ``out/demo/train/artifact``, from scripts/demo.sh) on its
test images. ``zcu102`` runs a seeded random integer ViT (sw/random_model.py) that fits it, on
random images (the build of the 32x64 array takes minutes): ``--zcu102-model smoke``
(:data:`ZCU102_MODEL`, 17 tokens) or ``deit-tiny`` (:data:`DEIT_TINY_BLOCKS`: two DeiT-T-shaped
blocks, 197 tokens, D = 192, 3 heads, with a selector before the second).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import torch

from vitforge.hw.config import get_preset
from vitforge.hw.isa import TOKENS, Op, assemble

#: The zcu102 smoke model: 17 tokens, D=128 in one head (the selector program needs head_dim a
#: multiple of lanes = 64 there), MLP 256, a selector before block 1.
ZCU102_MODEL = dict(image_size=16, patch_size=4, in_chans=1, num_classes=10, embed_dim=128, depth=2, num_heads=1,
                    mlp_ratio=2.0, selector_blocks=(1,), keep_rates=(0.5,))

#: Two DeiT-T-shaped blocks (224 x 224 RGB in 16 x 16 patches: 197 tokens, D = 192, 3 heads of 64,
#: MLP 768), a selector before block 1: the shapes whose cycles the zcu102 latency figures add up.
DEIT_TINY_BLOCKS = dict(image_size=224, patch_size=16, in_chans=3, num_classes=1000, embed_dim=192, depth=2,
                        num_heads=3, mlp_ratio=4.0, selector_blocks=(1,), keep_rates=(0.7,))
ZCU102_MODELS = {"smoke": ZCU102_MODEL, "deit-tiny": DEIT_TINY_BLOCKS}


def _dense(im):
    """``im`` without its token selectors (same weights; every token runs every block)."""
    return dataclasses.replace(im, thresholds={}, config=im.config.with_selectors((), ()))


def _layer_macs(program, select_tokens: list[int]) -> dict[str, int]:
    """MACs of each layer's GEMMs with the token register following ``select_tokens``."""
    tokens, s, out = 0, 0, {}
    for ins, layer in zip(program.instrs, program.layers, strict=True):
        if ins.op == Op.SELECT:
            tokens, s = select_tokens[s], s + 1
        elif ins.op == Op.GEMM:
            m, k, n = (tokens if v == TOKENS else v for v in (ins.m, ins.k, ins.n))
            out[layer] = out.get(layer, 0) + m * k * n
    return out


def _run(backend, golden, codes_list, program, cfg, model_cls) -> dict:
    """Run every image; per-layer means, cycle-model comparison, utilization."""
    model = model_cls(cfg, "axi")
    exact, cycles, wall, per_layer, pred_layer, macs_layer, gmacs, sim_cycles = 0, [], 0.0, {}, {}, {}, [], 0
    for codes in codes_list:
        want, macs, tokens = golden.run_codes(codes)
        t0 = time.perf_counter()
        start = backend.device.cycle
        got = backend.infer(codes)
        wall += time.perf_counter() - t0
        sim_cycles += backend.device.cycle - start
        exact += int(torch.equal(got.logits, want))
        cycles.append(got.cycles)
        gmacs.append(macs / 1e9)
        sel = [tokens[b] for b in sorted(golden.m.thresholds)]
        pred = model.program_cycles(program, sel, golden.pruned)
        for name, c in got.layer_cycles.items():
            per_layer[name] = per_layer.get(name, 0) + c / len(codes_list)
            pred_layer[name] = pred_layer.get(name, 0) + pred["per_layer"][name] / len(codes_list)
        for name, m in _layer_macs(program, sel).items():
            macs_layer[name] = macs_layer.get(name, 0) + m / len(codes_list)
    n = len(codes_list)
    pes = cfg.pe_rows * cfg.pe_cols
    layers = {name: {"cycles": c, "model_cycles": pred_layer[name],
                     "model_error_pct": 100.0 * (pred_layer[name] - c) / c,
                     "macs": macs_layer.get(name, 0.0),
                     "mac_utilization_pct": 100.0 * macs_layer.get(name, 0.0) / (c * pes)}
              for name, c in per_layer.items()}
    return {"images": n, "exact": exact, "cycles_per_image": sum(cycles) / n, "gmacs_per_image": sum(gmacs) / n,
            "wall_s_per_image": wall / n, "sim_cycles_per_s": sim_cycles / wall, "per_layer": layers}


def bench(preset: str, artifact: Path | None, images: int, dense: bool = True, zcu102_model: str = "smoke") -> dict:
    from vitforge.hw.cycles import CycleModel
    from vitforge.sim.rtl import RtlDevice

    from . import random_model
    from .data import load_data
    from .export import load_artifact, write_artifact
    from .golden import GoldenModel
    from .program import compile_program
    from .runtime import AcceleratorBackend, ArtifactProgram
    from .vit import ViTConfig

    cfg = get_preset(preset)
    artifact_given = artifact is not None
    if artifact is None:
        if preset != "zcu102":
            raise ValueError(f"--artifact is needed for preset {preset!r} (only zcu102 has a built-in smoke model)")
        if zcu102_model not in ZCU102_MODELS:
            raise ValueError(f"unknown zcu102 model {zcu102_model!r}; choose one of {sorted(ZCU102_MODELS)}")
        vit = ViTConfig(**ZCU102_MODELS[zcu102_model])
        seed = 3
        thr = random_model.mixed_threshold(seed, random_model.random_image(seed, vit), vit)
        im = random_model.random_int_model(seed, thr, vit, cfg.numerics)
        artifact = write_artifact(im, Path(tempfile.mkdtemp(prefix="vitforge-bench-")) / "artifact", preset)
        imgs = torch.stack([random_model.random_image(seed + i, vit) for i in range(images)])
    else:
        im, manifest = load_artifact(artifact)
        if manifest["hardware"]["preset"] != preset:
            raise ValueError(f"{artifact} targets preset {manifest['hardware']['preset']!r}, not {preset!r}")
        ds = (manifest.get("extra") or {}).get("dataset") or {}
        imgs = load_data(ds.get("spec"), seed=ds.get("seed", 0), size=im.config.image_size).x_test[:images]
    im, manifest = load_artifact(artifact)
    golden = GoldenModel(im)
    codes = [golden.input_codes(x) for x in imgs]
    t0 = time.perf_counter()
    device = RtlDevice(cfg)
    build_s = time.perf_counter() - t0
    prog = ArtifactProgram.load(Path(artifact), manifest)
    out = {"preset": preset, "pe_array": f"{cfg.pe_rows}x{cfg.pe_cols}", "clock_mhz": cfg.clock_mhz,
           "model": "artifact" if artifact_given else zcu102_model,
           "model_build_or_load_s": build_s}
    try:
        backend = AcceleratorBackend(device, cfg, prog, "rtl")
        out["pruned"] = _run(backend, golden, codes, prog.program, cfg, CycleModel)
        if dense and im.thresholds:
            dm = _dense(im)
            dprog = compile_program(dm, cfg)
            backend = AcceleratorBackend(device, cfg, ArtifactProgram(assemble(dprog.instrs), dprog), "rtl")
            out["dense"] = _run(backend, GoldenModel(dm), codes[:1], dprog, cfg, CycleModel)
            dense_gmacs = GoldenModel(dm).run_codes(codes[0])[1] / 1e9
            p, d = out["pruned"], out["dense"]
            cyc_ratio = p["cycles_per_image"] / d["cycles_per_image"]
            gmac_ratio = p["gmacs_per_image"] / dense_gmacs
            out["pruned_vs_dense"] = {
                "cycle_ratio": cyc_ratio, "gmac_ratio": gmac_ratio,
                "cycle_saving_over_gmac_saving": (1 - cyc_ratio) / (1 - gmac_ratio) if gmac_ratio < 1 else None,
                "selector_cycles_share_of_dense": sum(v["cycles"] for k, v in p["per_layer"].items()
                                                      if k.startswith("selectors.")) / d["cycles_per_image"],
            }
    finally:
        device.close()
    return out


def _print(res: dict) -> None:
    p = res["pruned"]
    print(f"== {res['preset']}, {res['model']} model ({res['pe_array']} PE array, {res['clock_mhz']:g} MHz): "
          f"{p['exact']}/{p['images']} images bit-exact with the golden model")
    print(f"   {p['cycles_per_image']:,.0f} cycles per image ({p['cycles_per_image'] / res['clock_mhz'] / 1e3:.3f} ms "
          f"at the clock); {p['sim_cycles_per_s']:,.0f} simulated cycles/s; {p['wall_s_per_image']:.2f} s wall per "
          f"image; model built/loaded in {res['model_build_or_load_s']:.1f} s")
    print(f"   {'layer':<14} {'cycles':>12} {'model':>12} {'err %':>7} {'MACs':>12} {'MAC util %':>10}")
    for name, v in p["per_layer"].items():
        print(f"   {name:<14} {v['cycles']:12,.0f} {v['model_cycles']:12,.0f} {v['model_error_pct']:7.2f} "
              f"{v['macs']:12,.0f} {v['mac_utilization_pct']:10.1f}")
    if "pruned_vs_dense" in res:
        r = res["pruned_vs_dense"]
        print(f"   pruned/dense: cycles {r['cycle_ratio']:.3f}, GMACs {r['gmac_ratio']:.3f}; the cycle saving is "
              f"{r['cycle_saving_over_gmac_saving']:.3f} of the GMAC saving; the selectors take "
              f"{100 * r['selector_cycles_share_of_dense']:.1f}% of the dense cycles")


def _plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for ax, res in zip(axes[0], results, strict=True):
        names = list(res["pruned"]["per_layer"])
        pr = [res["pruned"]["per_layer"][n]["cycles"] for n in names]
        x = range(len(names))
        if "dense" in res:
            dn = [res["dense"]["per_layer"].get(n, {}).get("cycles", 0) for n in names]
            ax.bar([i - 0.2 for i in x], dn, 0.4, label="dense")
            ax.bar([i + 0.2 for i in x], pr, 0.4, label="pruned")
            ax.legend()
        else:
            ax.bar(list(x), pr, 0.6)
        ax.set_xticks(list(x), names, rotation=45, ha="right")
        ax.set_ylabel("RTL cycles per image")
        ax.set_title(f"{res['preset']}: cycles per layer (Verilator)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", action="append", choices=("demo", "zcu102"),
                    help="preset(s) to run (default: demo)")
    ap.add_argument("--artifact", type=Path, default=Path("out/demo/train/artifact"), help="demo artifact")
    ap.add_argument("--images", type=int, default=8, help="images per preset (default 8)")
    ap.add_argument("--zcu102-model", choices=sorted(ZCU102_MODELS), default="smoke",
                    help="the zcu102 preset's random model: smoke (17 tokens, default) or deit-tiny (two DeiT-T "
                    "blocks, 197 tokens, a selector before the second)")
    ap.add_argument("--out", type=Path, default=None, help="folder for bench_rtl.json and bench_rtl.png")
    args = ap.parse_args(argv)
    results = []
    for preset in args.preset or ["demo"]:
        res = bench(preset, args.artifact if preset == "demo" else None, args.images if preset == "demo" else
                    min(args.images, 2), zcu102_model=args.zcu102_model)
        _print(res)
        results.append(res)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_rtl.json").write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
        _plot(results, args.out / "bench_rtl.png")
        print(f"wrote {args.out / 'bench_rtl.json'} and {args.out / 'bench_rtl.png'}")
    return 0


__all__ = ["bench", "main"]
