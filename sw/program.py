"""The controller program of an exported model: one instruction stream (hw/isa.py) per image.

The stream follows the golden model's order: load each layer's weights and parameters, run it,
and keep activations in the activation scratchpad at addresses from a bump allocator that is
reset per encoder block (the input of a block lives at address 0). Matrices use the row-major
word layout of hw/config.py. Buffers are sized for ``num_tokens`` rows (a selector that adds a
package token has pruned at least one token); before the first ``SELECT`` the token count is
``num_tokens``, after it size fields hold :data:`~vitforge.hw.isa.TOKENS` and word counts
:data:`~vitforge.hw.isa.PER_TOKEN` (hw/controller.py's token-count register). The selector's own
MLPs (GEMMs and nonlinear units before each ``SELECT``) and the token means they need are not in
the stream yet; the attention products' (mult, shift) parameter words are not loaded yet.

This module only lays out the stream; it does not claim cycle accuracy.
"""

from __future__ import annotations

from vitforge.hw import isa
from vitforge.hw.config import HwConfig
from vitforge.hw.isa import Instr, Mem, Op


class _Alloc:
    def __init__(self, hw: HwConfig) -> None:
        self.hw = hw
        self.top = 0

    def reset(self, keep: int = 0) -> None:
        self.top = keep

    def matrix(self, rows: int, cols: int) -> tuple[int, int]:
        """(address, row stride in words) of a new ``rows x cols`` matrix."""
        stride = self.hw.row_words(cols)
        addr = self.top
        self.top += rows * stride
        if self.top > self.hw.act_depth:
            raise ValueError(f"activation scratchpad overflow: {self.top} > act_depth {self.hw.act_depth} words")
        return addr, stride


def _linear_instrs(im, name: str, hw: HwConfig, a: tuple[int, int], dst: tuple[int, int], m: int) -> list[Instr]:
    w = im.layers[name]["w"]
    k, n = w.shape
    wwords = hw.matrix_words(k, n)
    pwords = hw.row_words(n)
    return [
        Instr(Op.LOAD, mem=Mem.WEIGHT, addr=0, count=wwords),
        Instr(Op.LOAD, mem=Mem.PARAM, addr=0, count=pwords),
        Instr(Op.GEMM, a_addr=a[0], a_stride=a[1], b_addr=0, b_stride=hw.row_words(n), dst_addr=dst[0],
              dst_stride=dst[1], param_addr=0, m=m, k=k, n=n),
    ]


def program_instrs(im, hw: HwConfig) -> list[Instr]:
    """The instruction list for one image (see the module docstring)."""
    cfg = im.config
    d, hd, t = cfg.embed_dim, cfg.head_dim, cfg.num_tokens
    al = _Alloc(hw)
    prog: list[Instr] = []
    x = al.matrix(t, d)  # kept + package <= t: one pruned token frees the package's row
    patches = al.matrix(cfg.num_patches, cfg.in_chans * cfg.patch_size**2)
    prog.append(Instr(Op.LOAD, mem=Mem.ACT, addr=patches[0], count=hw.matrix_words(*_shape(cfg))))
    prog += _linear_instrs(im, "patch_embed", hw, patches, (x[0] + x[1], x[1]), cfg.num_patches)
    pos = al.matrix(t, d)
    prog.append(Instr(Op.LOAD, mem=Mem.ACT, addr=pos[0], count=hw.matrix_words(t, d)))
    p = im.layers["pos_add"]
    prog.append(Instr(Op.ADD, a_addr=x[0], b_addr=pos[0], dst_addr=x[0], count=hw.matrix_words(t, d),
                      mult_a=p["mult_a"], mult_b=p["mult_b"], shift=p["shift"]))
    dynamic = False  # after the first SELECT, token counts come from the controller's register
    for i in range(cfg.depth):
        tokens = isa.TOKENS if dynamic else t
        x_words = (isa.PER_TOKEN | hw.row_words(d)) if dynamic else hw.matrix_words(t, d)
        al.reset(x[0] + hw.matrix_words(t, d))
        if i in im.thresholds:
            scores = al.matrix(t, 2 * hw.lanes)  # two words per token: keep scores, head weights
            prog.append(Instr(Op.LOAD, mem=Mem.PARAM, addr=0, count=1))  # the threshold word
            prog.append(Instr(Op.SELECT, scores_addr=scores[0], tokens_addr=x[0], tokens_stride=x[1],
                              dst_addr=x[0], n_tokens=tokens, dim=d, param_addr=0))
            dynamic, tokens = True, isa.TOKENS
            x_words = isa.PER_TOKEN | hw.row_words(d)
        pre = f"blocks.{i}"
        h = al.matrix(t, d)
        prog.append(Instr(Op.LOAD, mem=Mem.PARAM, addr=0, count=hw.row_words(d) + 1))
        prog.append(Instr(Op.LAYERNORM, src_addr=x[0], src_stride=x[1], dst_addr=h[0], dst_stride=h[1],
                          rows=tokens, cols=d, param_addr=0))
        qkv = al.matrix(t, 3 * d)
        prog += _linear_instrs(im, f"{pre}.attn.qkv", hw, h, qkv, tokens)
        s = al.matrix(t, t)
        pr = al.matrix(t, t)
        o = al.matrix(t, d)
        for hh in range(cfg.num_heads):
            q_addr = qkv[0] + hh * hd // hw.lanes
            k_addr = qkv[0] + (d + hh * hd) // hw.lanes
            v_addr = qkv[0] + (2 * d + hh * hd) // hw.lanes
            prog.append(Instr(Op.GEMM, a_addr=q_addr, a_stride=qkv[1], b_addr=k_addr, b_stride=qkv[1],
                              dst_addr=s[0], dst_stride=s[1], param_addr=0, m=tokens, k=hd, n=tokens,
                              b_act=1, b_trans=1))
            prog.append(Instr(Op.SOFTMAX, src_addr=s[0], src_stride=s[1], dst_addr=pr[0], dst_stride=pr[1],
                              rows=tokens, cols=tokens, param_addr=0))
            prog.append(Instr(Op.GEMM, a_addr=pr[0], a_stride=pr[1], b_addr=v_addr, b_stride=qkv[1],
                              dst_addr=o[0] + hh * hd // hw.lanes, dst_stride=o[1], param_addr=0,
                              m=tokens, k=tokens, n=hd, b_act=1))
        a = al.matrix(t, d)
        prog += _linear_instrs(im, f"{pre}.attn.proj", hw, o, a, tokens)
        p = im.layers[f"{pre}.add1"]
        prog.append(Instr(Op.ADD, a_addr=x[0], b_addr=a[0], dst_addr=x[0], count=x_words,
                          mult_a=p["mult_a"], mult_b=p["mult_b"], shift=p["shift"]))
        prog.append(Instr(Op.LOAD, mem=Mem.PARAM, addr=0, count=hw.row_words(d) + 1))
        prog.append(Instr(Op.LAYERNORM, src_addr=x[0], src_stride=x[1], dst_addr=h[0], dst_stride=h[1],
                          rows=tokens, cols=d, param_addr=0))
        f1 = al.matrix(t, cfg.mlp_dim)
        prog += _linear_instrs(im, f"{pre}.fc1", hw, h, f1, tokens)
        g = al.matrix(t, cfg.mlp_dim)
        prog.append(Instr(Op.GELU, src_addr=f1[0], src_stride=f1[1], dst_addr=g[0], dst_stride=g[1],
                          rows=tokens, cols=cfg.mlp_dim, param_addr=0))
        prog += _linear_instrs(im, f"{pre}.fc2", hw, g, a, tokens)
        p = im.layers[f"{pre}.add2"]
        prog.append(Instr(Op.ADD, a_addr=x[0], b_addr=a[0], dst_addr=x[0], count=x_words,
                          mult_a=p["mult_a"], mult_b=p["mult_b"], shift=p["shift"]))
    h = al.matrix(1, d)
    prog.append(Instr(Op.LOAD, mem=Mem.PARAM, addr=0, count=hw.row_words(d) + 1))
    prog.append(Instr(Op.LAYERNORM, src_addr=x[0], src_stride=x[1], dst_addr=h[0], dst_stride=h[1],
                      rows=1, cols=d, param_addr=0))
    out = al.matrix(1, cfg.num_classes)
    prog += _linear_instrs(im, "head", hw, h, out, 1)
    prog.append(Instr(Op.STORE, mem=Mem.ACT, addr=out[0], count=hw.matrix_words(1, cfg.num_classes)))
    prog.append(Instr(Op.END))
    return prog


def _shape(cfg) -> tuple[int, int]:
    return cfg.num_patches, cfg.in_chans * cfg.patch_size**2


def build_program(im, hw: HwConfig, writer) -> dict:
    """Assemble the program and write ``program.bin``/``program.hex`` through ``writer``."""
    prog = program_instrs(im, hw)
    words = isa.assemble(prog)
    raw = isa.to_bytes(words)
    digits = isa.INSTR_BITS // 4
    hexd = "".join(f"{w:0{digits}x}\n" for w in words).encode()
    return {
        "bin": writer.put("program.bin", raw, words=len(words), word_bits=isa.INSTR_BITS),
        "hex": writer.put("program.hex", hexd, words=len(words), word_bits=isa.INSTR_BITS),
        "instructions": len(words),
        "fits_imem": len(words) <= hw.imem_depth,
    }
