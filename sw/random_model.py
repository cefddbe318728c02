"""Random integer ViTs for tests and benches: an :class:`~vitforge.sw.export.IntModel` built from
sim/benches/reference.py's random blocks (requantizations that keep the codes spread), so that whole-model
programs can be checked against the golden model without training anything."""

from __future__ import annotations

import torch

from vitforge.quant.config import NumericsConfig
from vitforge.quant.fixed import quantize_multiplier
from vitforge.sim.benches import reference as block_ref

from .export import IntModel
from .golden import GoldenModel
from .vit import ViTConfig

INT8_FMT = (8, 0, True)


def _linear(lin) -> dict:
    return {"kind": "linear", "out_fmt": INT8_FMT, "w": lin.w, "b": lin.bias, "mult": lin.mult, "shift": lin.shift}


def _ln(ln) -> dict:
    return {"kind": "layernorm", "out_fmt": INT8_FMT, "gamma": ln.gamma, "beta": ln.beta, "mult": ln.mult,
            "shift": ln.shift, "eps_q": ln.eps_q}


def random_int_model(seed: int, threshold: int, model: ViTConfig, numerics: NumericsConfig | None = None) -> IntModel:
    """An IntModel with sim/benches/reference.py's random blocks (requantizations that keep codes spread)."""
    gen = torch.Generator().manual_seed(seed)
    d, heads, mlp = model.embed_dim, model.num_heads, int(model.embed_dim * model.mlp_ratio)
    layers: dict[str, dict] = {}
    stem = block_ref.make_block_params(dim=d, heads=heads, mlp=mlp, selector=False, seed=seed + 100)
    layers["patch_embed"] = _linear(block_ref.random_linear(gen, model.in_chans * model.patch_size**2, d, 2000.0))
    add = quantize_multiplier(0.7)
    layers["pos_add"] = {"kind": "add", "out_fmt": INT8_FMT, "mult_a": add[0], "mult_b": add[0], "shift": add[1]}
    for i in range(model.depth):
        p = block_ref.make_block_params(dim=d, heads=heads, mlp=mlp, selector=i in model.selector_blocks,
                                        seed=seed + i)
        pre = f"blocks.{i}"
        layers.update({
            f"{pre}.norm1": _ln(p.ln1), f"{pre}.attn.qkv": _linear(p.qkv), f"{pre}.attn.proj": _linear(p.proj),
            f"{pre}.norm2": _ln(p.ln2), f"{pre}.fc1": _linear(p.fc1), f"{pre}.fc2": _linear(p.fc2),
        })
        for name, (mult, shift) in (("attn.qk", p.qk), ("attn.av", p.av)):
            layers[f"{pre}.{name}"] = {"kind": "matmul", "out_fmt": INT8_FMT, "mult": mult, "shift": shift}
        for name, (ma, mb, shift) in (("add1", p.add1), ("add2", p.add2)):
            layers[f"{pre}.{name}"] = {"kind": "add", "out_fmt": INT8_FMT, "mult_a": ma, "mult_b": mb, "shift": shift}
        if p.sel_mlp1 is not None:
            sp = f"selectors.{i}"
            for h in range(heads):
                layers[f"{sp}.scorers.{h}.norm"] = _ln(p.sel_ln)
                layers[f"{sp}.scorers.{h}.mlp1"] = _linear(p.sel_mlp1[h])
                for j, lin in enumerate(p.sel_mlp2[h]):
                    layers[f"{sp}.scorers.{h}.mlp2.linears.{j}"] = _linear(lin)
            for j, lin in enumerate(p.sel_wmlp):
                layers[f"{sp}.weight_mlp.linears.{j}"] = _linear(lin)
    layers["norm"] = _ln(stem.ln1)
    layers["head"] = _linear(block_ref.random_linear(gen, d, model.num_classes, 2000.0))
    tensors = {"cls": torch.randint(-128, 128, (d,), generator=gen),
               "pos": torch.randint(-128, 128, (model.num_tokens, d), generator=gen)}
    thresholds = {b: threshold for b in model.selector_blocks}
    return IntModel(model, numerics or NumericsConfig(), 1 / 64, 1.0, layers, tensors, thresholds)


def random_image(seed: int, model: ViTConfig) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((model.in_chans, model.image_size, model.image_size), generator=gen) * 2 - 1


def mixed_threshold(seed: int, image: torch.Tensor, model: ViTConfig) -> int:
    """A threshold at which the golden (first) selector keeps some tokens and prunes others."""
    for threshold in range(0, 128, 2):
        _, _, tokens = GoldenModel(random_int_model(seed, threshold, model)).run(image)
        if 1 < tokens[1] - 1 < model.num_tokens - 1:  # kept (class token included) + the package token
            return threshold
    raise AssertionError("no threshold keeps some tokens and prunes others")


def random_artifact(seed: int, model: ViTConfig, out, preset: str = "demo"):
    """An artifact at ``out`` of :func:`random_int_model` with a :func:`mixed_threshold` (its first selector
    keeps some tokens of :func:`random_image` ``seed`` and prunes others), for ``preset``'s numerics."""
    from vitforge.hw.config import get_preset

    from .export import write_artifact

    image = random_image(seed, model)
    im = random_int_model(seed, mixed_threshold(seed, image, model), model, get_preset(preset).numerics)
    return write_artifact(im, out, preset)
