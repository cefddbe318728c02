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

import json

from vitforge.hw import compiler as hwp
from vitforge.hw import isa
from vitforge.hw.config import HwConfig
from vitforge.hw.isa import Mem

#: Number of linear layers of a selector's MLP2 and head-weight MLP (sw/selector.py).
_MLP2_LAYERS, _WEIGHT_MLP_LAYERS = 3, 2


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
            selector = hwp.Selector(
                norms=[layernorm(f"{sp}.scorers.{h}.norm") for h in heads],
                mlp1=[linear(f"{sp}.scorers.{h}.mlp1") for h in heads],
                mlp2=[[linear(f"{sp}.scorers.{h}.mlp2.linears.{j}") for j in range(_MLP2_LAYERS)] for h in heads],
                weight_mlp=[linear(f"{sp}.weight_mlp.linears.{j}") for j in range(_WEIGHT_MLP_LAYERS)],
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
    """Compile ``im`` and write the program, its memory images and LOAD table through ``writer``."""
    from .export import _words_to_files

    prog = compile_program(im, hw)
    words = isa.assemble(prog.instrs)
    digits = isa.INSTR_BITS // 4
    hexd = "".join(f"{w:0{digits}x}\n" for w in words).encode()
    mems = {ld.blob: ld.mem for ld in prog.loads}
    images = {}
    for name in sorted(prog.blobs):
        bits = hw.param_word_bits if mems[name] == Mem.PARAM else hw.word_bits
        raw, hx = _words_to_files(prog.blobs[name], bits)
        n = len(prog.blobs[name])
        images[name] = [writer.put(f"program/{name}.bin", raw, words=n, word_bits=bits),
                        writer.put(f"program/{name}.hex", hx, words=n, word_bits=bits)]
    table = {
        "input": {"blob": hwp.INPUT_BLOB, "shape": list(prog.input_shape), "word_bits": hw.word_bits},
        "output": {"rows": prog.output_rows, "cols": prog.output_cols, "word_bits": hw.word_bits},
        "loads": prog.load_table(),
        "layers": prog.layers,
    }
    return {
        "bin": writer.put("program.bin", isa.to_bytes(words), words=len(words), word_bits=isa.INSTR_BITS),
        "hex": writer.put("program.hex", hexd, words=len(words), word_bits=isa.INSTR_BITS),
        "loads": writer.put("program/loads.json", (json.dumps(table, sort_keys=True, indent=1) + "\n").encode()),
        "images": images,
        "instructions": len(words),
        "fits_imem": len(words) <= hw.imem_depth,
    }
