"""The controller program of an exported model, compiled by :mod:`vitforge.hw.compiler`.

:func:`hw_model` gives the compiler its hardware-neutral description of an
:class:`~.export.IntModel` (the layer names of :mod:`.golden`); :func:`build_program` compiles it
for a preset and writes, through the artifact writer:

* ``program.bin`` / ``program.hex``: the instruction stream (:mod:`vitforge.hw.isa`);
* ``program/<blob>.bin`` / ``.hex``: every memory image the program ``LOAD``\\ s (weight and
  activation words of ``word_bits``, parameter words of ``param_word_bits``);
* ``program/loads.json``: the LOAD table, one row per ``LOAD`` instruction in program order
  (``blob``, word ``offset``, ``count``, ``mem``, ``addr``), the ``input`` blob's shape (the
  quantized patches, ``quantize(patchify(image), input_scale)``, packed row-major) and the
  ``STORE``\\ d output's shape (the logits row).
"""

from __future__ import annotations

import itertools

import torch

from vitforge.hw import compiler as hwp
from vitforge.hw.config import HwConfig
from vitforge.quant.selector import head_weight_dims, scorer_dims

from .artifact import write_program

#: The int8 output format of every layer the hardware runs: (bits, frac, signed).
INT8_OUT = (8, 0, True)


def layer_shapes(cfg) -> dict[str, tuple]:
    """Every integer layer of a model of ``cfg`` (a :class:`~.vit.ViTConfig`), by the names of
    :mod:`.golden` and :mod:`.export`: ``("linear", in, out)``, ``("layernorm", dim)``, ``("matmul",)`` or
    ``("add",)``, in program order. The one place that lists them for :func:`zero_int_model`."""
    d, heads, hd = cfg.embed_dim, cfg.num_heads, cfg.head_dim
    out: dict[str, tuple] = {"patch_embed": ("linear", cfg.in_chans * cfg.patch_size ** 2, d), "pos_add": ("add",)}
    for i in range(cfg.depth):
        if i in cfg.selector_blocks:
            sp = f"selectors.{i}"
            for h in range(heads):
                out[f"{sp}.scorers.{h}.norm"] = ("layernorm", hd)
                out[f"{sp}.scorers.{h}.mlp1"] = ("linear", hd, hd)
                for j, (a, z) in enumerate(itertools.pairwise(scorer_dims(hd))):
                    out[f"{sp}.scorers.{h}.mlp2.linears.{j}"] = ("linear", a, z)
            for j, (a, z) in enumerate(itertools.pairwise(head_weight_dims(heads))):
                out[f"{sp}.weight_mlp.linears.{j}"] = ("linear", a, z)
        pre = f"blocks.{i}"
        out.update({f"{pre}.norm1": ("layernorm", d), f"{pre}.attn.qkv": ("linear", d, 3 * d),
                    f"{pre}.attn.qk": ("matmul",), f"{pre}.attn.av": ("matmul",), f"{pre}.attn.proj": ("linear", d, d),
                    f"{pre}.add1": ("add",), f"{pre}.norm2": ("layernorm", d), f"{pre}.fc1": ("linear", d, cfg.mlp_dim),
                    f"{pre}.fc2": ("linear", cfg.mlp_dim, d), f"{pre}.add2": ("add",)})
    out.update({"norm": ("layernorm", d), "head": ("linear", d, cfg.num_classes)})
    return out


def zero_int_model(cfg, numerics=None):
    """An :class:`~.export.IntModel` of ``cfg``'s shapes with every value zero: what the compiler needs to
    emit ``cfg``'s instruction stream, which depends on the shapes only (sw/latency.py's programs)."""
    from vitforge.quant.config import NumericsConfig

    from .export import IntModel

    def zeros(*shape):
        return torch.zeros(shape, dtype=torch.int64)

    layers = {}
    for name, (kind, *dims) in layer_shapes(cfg).items():
        entry = {"kind": kind, "out_fmt": INT8_OUT}
        if kind == "linear":
            entry.update(w=zeros(*dims), b=zeros(dims[1]), mult=zeros(dims[1]), shift=zeros(dims[1]))
        elif kind == "layernorm":
            entry.update(gamma=zeros(dims[0]), beta=zeros(dims[0]), mult=0, shift=0, eps_q=0)
        elif kind == "matmul":
            entry.update(mult=0, shift=0)
        else:
            entry.update(mult_a=0, mult_b=0, shift=0)
        layers[name] = entry
    tensors = {"cls": zeros(cfg.embed_dim), "pos": zeros(cfg.num_tokens, cfg.embed_dim)}
    return IntModel(cfg, numerics or NumericsConfig(), 1.0, 1.0, layers, tensors, dict.fromkeys(cfg.selector_blocks, 0))


def _check_int8(name: str, entry: dict) -> None:
    bits, _, signed = entry["out_fmt"]
    if bits != 8 or not signed:
        raise ValueError(f"layer {name} outputs {'' if signed else 'un'}signed {bits}-bit codes; "
                         "the hardware writes int8")


def hw_model(im) -> hwp.Model:
    """``im`` (an :class:`~.export.IntModel`) as :class:`vitforge.hw.compiler.Model`."""
    cfg, layers = im.config, im.layers

    def linear(name: str) -> hwp.Linear:
        p = layers[name]
        _check_int8(name, p)
        return hwp.Linear(p["w"], p["b"], p["mult"], p["shift"])

    def layernorm(name: str) -> hwp.LayerNorm:
        p = layers[name]
        _check_int8(name, p)
        return hwp.LayerNorm(p["gamma"], p["beta"], p["mult"], p["shift"], p["eps_q"])

    def add(name: str) -> hwp.Add:
        p = layers[name]
        _check_int8(name, p)
        return hwp.Add(p["mult_a"], p["mult_b"], p["shift"])

    def requant(name: str) -> hwp.Requant:
        p = layers[name]
        _check_int8(name, p)
        return hwp.Requant(p["mult"], p["shift"])

    blocks = []
    for i in range(cfg.depth):
        pre = f"blocks.{i}"
        selector = None
        if i in im.thresholds:
            sp = f"selectors.{i}"
            heads = range(cfg.num_heads)
            mlp2_layers = range(len(scorer_dims(cfg.head_dim)) - 1)
            weight_layers = range(len(head_weight_dims(cfg.num_heads)) - 1)
            selector = hwp.Selector(
                norms=[layernorm(f"{sp}.scorers.{h}.norm") for h in heads],
                mlp1=[linear(f"{sp}.scorers.{h}.mlp1") for h in heads],
                mlp2=[[linear(f"{sp}.scorers.{h}.mlp2.linears.{j}") for j in mlp2_layers] for h in heads],
                weight_mlp=[linear(f"{sp}.weight_mlp.linears.{j}") for j in weight_layers],
                threshold=im.thresholds[i],
            )
        blocks.append(hwp.Block(
            heads=cfg.num_heads, ln1=layernorm(f"{pre}.norm1"), qkv=linear(f"{pre}.attn.qkv"),
            qk=requant(f"{pre}.attn.qk"), av=requant(f"{pre}.attn.av"), proj=linear(f"{pre}.attn.proj"),
            add1=add(f"{pre}.add1"), ln2=layernorm(f"{pre}.norm2"), fc1=linear(f"{pre}.fc1"),
            fc2=linear(f"{pre}.fc2"), add2=add(f"{pre}.add2"), selector=selector,
        ))
    return hwp.Model(patch_embed=linear("patch_embed"), cls=im.tensors["cls"], pos=im.tensors["pos"],
                     pos_add=add("pos_add"), blocks=blocks, norm=layernorm("norm"), head=linear("head"))


def compile_program(im, hw: HwConfig) -> hwp.Program:
    """The compiled program of ``im`` for ``hw``."""
    return hwp.compile_model(hw_model(im), hw)


def build_program(im, hw: HwConfig, writer) -> dict:
    """Compile ``im`` and write the program, its memory images and LOAD table through ``writer``
    (an :class:`~.artifact.Writer`); returns the manifest's ``program`` section."""
    return write_program(compile_program(im, hw), hw, writer)
