"""Pure-quant reference of one encoder block (optionally behind a token selector), the scratchpad
word layout of hw/config.py, and a small program generator emitting the hw/isa.py stream for it.

Layout helpers (the memory organization of :mod:`vitforge.hw.config`):

* :func:`pack_matrix` / :func:`unpack_matrix` — ``(rows, cols)`` int8 matrix <-> scratchpad words
  (``lanes`` elements a word, row-major, row stride in words, padding lanes 0).
* :func:`pack_params` — per-output-channel ``(bias, mult, shift)`` -> parameter words.
* :func:`gemm_case` — one random GEMM instruction with its scratchpad contents (tests).

The block reference and program generator are below (:func:`block_reference`,
:func:`block_program`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vitforge.hw.config import HwConfig
from vitforge.hw.isa import Instr, Op
from vitforge.quant.fixed import REQUANT_MULT_BITS

#: Largest requantization multiplier.
MMAX = (1 << REQUANT_MULT_BITS) - 1


def _lane_bits(cfg: HwConfig) -> int:
    return cfg.act_bits


def pack_matrix(cfg: HwConfig, x: torch.Tensor, stride: int | None = None) -> list[int]:
    """``x: (rows, cols)`` int8 codes -> ``rows * stride`` words (unsigned ints), padding lanes 0."""
    x = torch.as_tensor(x, dtype=torch.int64)
    if x.dim() != 2:
        raise ValueError(f"pack_matrix needs a 2-D matrix, not shape {tuple(x.shape)}")
    rows, cols = x.shape
    stride = cfg.row_words(cols) if stride is None else stride
    if stride < cfg.row_words(cols):
        raise ValueError(f"row stride {stride} words is too small for {cols} columns ({cfg.row_words(cols)} words)")
    bits, lanes = _lane_bits(cfg), cfg.lanes
    mask = (1 << bits) - 1
    words = [0] * (rows * stride)
    flat = x.tolist()
    for r in range(rows):
        for c in range(cols):
            words[r * stride + c // lanes] |= (flat[r][c] & mask) << (bits * (c % lanes))
    return words


def unpack_matrix(cfg: HwConfig, words: list[int], rows: int, cols: int, stride: int | None = None,
                  signed: bool = True) -> torch.Tensor:
    """Words -> ``(rows, cols)`` int64 codes (signed int8 unless ``signed=False``)."""
    stride = cfg.row_words(cols) if stride is None else stride
    bits, lanes = _lane_bits(cfg), cfg.lanes
    mask, half = (1 << bits) - 1, 1 << (bits - 1)
    out = torch.zeros((rows, cols), dtype=torch.int64)
    for r in range(rows):
        for c in range(cols):
            v = (int(words[r * stride + c // lanes]) >> (bits * (c % lanes))) & mask
            out[r, c] = v - (1 << bits) if signed and v >= half else v
    return out


def pack_params(cfg: HwConfig, bias: torch.Tensor, mult: torch.Tensor, shift: torch.Tensor) -> list[int]:
    """Per-channel ``bias`` (int32), ``mult`` (uint16), ``shift`` -> ``row_words(n)`` parameter words."""
    from vitforge.hw.gemm import param_word_layout

    n, lanes = len(bias), cfg.lanes
    layout = param_word_layout(cfg)
    words = []
    for w in range(cfg.row_words(n)):
        lane_vals = []
        for j in range(lanes):
            c = w * lanes + j
            lane_vals.append({"bias": int(bias[c]), "mult": int(mult[c]), "shift": int(shift[c])} if c < n
                             else {"bias": 0, "mult": 0, "shift": 0})
        words.append(int(layout.const(lane_vals).as_bits()))
    return words


@dataclass
class GemmCase:
    """One GEMM instruction, its operands and the scratchpad contents it needs.

    ``a: (m, k)``, ``b: (k, n)`` (the logical B, whatever its storage), ``bias/mult/shift: (n,)``;
    ``preload``: ``(memory "act"/"wt", word address, words)``; ``param_words`` from address 0.
    """

    instr: Instr
    a: torch.Tensor
    b: torch.Tensor
    bias: torch.Tensor
    mult: torch.Tensor
    shift: torch.Tensor
    preload: list[tuple[str, int, list[int]]]
    param_words: list[int]


def gemm_case(cfg: HwConfig, *, m: int, k: int, n: int, b_trans: bool, b_act: bool, pad: int,
              saturate: bool, seed: int, base: int = 8) -> GemmCase:
    """A random GEMM instruction with operands laid out from word ``base`` (strides ``pad`` words wider).

    ``saturate``: extreme operands and a large multiplier so that outputs hit both int8 limits.
    """
    gen = torch.Generator().manual_seed(seed)
    if saturate:
        a = torch.randint(-128, 128, (m, k), generator=gen)
        a[0], a[1] = 127, -128
        b = torch.randint(-128, 128, (k, n), generator=gen)
        b[:, 0], b[:, 1] = 127, -128
        bias = torch.zeros(n, dtype=torch.int64)
        mult = torch.full((n,), MMAX)
        shift = torch.full((n,), 8)
    else:
        a = torch.randint(-128, 128, (m, k), generator=gen)
        b = torch.randint(-128, 128, (k, n), generator=gen)
        bias = torch.randint(-(1 << 12), 1 << 12, (n,), generator=gen)
        mult = torch.randint(1 << 14, MMAX + 1, (n,), generator=gen)
        shift = torch.randint(22, 26, (n,), generator=gen)
    stored_b = b.T.contiguous() if b_trans else b
    a_stride = cfg.row_words(k) + pad
    b_stride = cfg.row_words(stored_b.shape[1]) + pad
    dst_stride = cfg.row_words(n) + pad
    a_addr = base
    b_region = base + m * a_stride + 3 if b_act else 5
    dst_addr = (b_region + stored_b.shape[0] * b_stride + 2) if b_act else (a_addr + m * a_stride + 2)
    preload = [("act", a_addr, pack_matrix(cfg, a, a_stride)),
               ("act" if b_act else "wt", b_region, pack_matrix(cfg, stored_b, b_stride))]
    instr = Instr(Op.GEMM, a_addr=a_addr, a_stride=a_stride, b_addr=b_region, b_stride=b_stride,
                  dst_addr=dst_addr, dst_stride=dst_stride, param_addr=1, m=m, k=k, n=n,
                  b_act=int(b_act), b_trans=int(b_trans))
    params = [0, *pack_params(cfg, bias, mult, shift)]
    return GemmCase(instr, a, b, bias, mult, shift, preload, params)


# --- encoder block: parameters, pure-quant reference, program ------------------------------------

#: Target spread (std of int8 codes) the random requantizations aim at.
_TARGET_STD = 40.0
#: Rough std of a uniform int8 code.
_CODE_STD = 74.0


def _requant_for(k: int, target: float = _TARGET_STD, in_std: float = _CODE_STD) -> tuple[int, int]:
    """(mult, shift) that maps a K-deep int8 GEMM to codes of about ``target`` std."""
    from vitforge.quant.fixed import quantize_multiplier

    return quantize_multiplier(target / (in_std * _CODE_STD * k**0.5))


def mean_requant(n: int) -> tuple[int, int]:
    """``(mult, shift)`` with ``requantize(s, mult, shift) == token_mean`` for every sum of ``n`` int8 codes.

    :func:`vitforge.quant.selector.token_mean` computes ``round_shift(s * floor(2**24 / n), 24)``;
    a GEMM against a vector of ones computes the same sum ``s`` and requantizes it. Raises
    ``ValueError`` naming ``n`` if no ``REQUANT_MULT_BITS``-bit multiplier reproduces it exactly.
    """
    from vitforge.quant.fixed import INT8, REQUANT_MAX_SHIFT, requantize, round_shift, saturate
    from vitforge.quant.selector import MEAN_RECIP_BITS

    sums = torch.arange(-128 * n, 127 * n + 1, dtype=torch.int64)
    want = saturate(round_shift(sums * ((1 << MEAN_RECIP_BITS) // n), MEAN_RECIP_BITS), INT8)
    recip = ((1 << MEAN_RECIP_BITS) // n)
    for shift in range(REQUANT_MAX_SHIFT + 1):
        base = recip * 2.0 ** (shift - MEAN_RECIP_BITS)
        for mult in {int(base), int(base) + 1, max(int(base) - 1, 0)}:
            if 0 < mult <= MMAX and torch.equal(requantize(sums, mult, shift), want):
                return mult, shift
    raise ValueError(f"no requantization reproduces token_mean over n={n} tokens exactly")


@dataclass
class Linear:
    """One GEMM layer: ``w: (k, n)`` int8, ``bias: (n,)`` int32, per-channel ``mult``/``shift``."""

    w: torch.Tensor
    bias: torch.Tensor
    mult: torch.Tensor
    shift: torch.Tensor

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from vitforge.quant.ops import gemm

        return gemm(x, self.w, self.bias, self.mult, self.shift)


@dataclass
class LayerNormParams:
    gamma: torch.Tensor
    beta: torch.Tensor
    mult: int
    shift: int
    eps_q: int

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        from vitforge.quant.nonlinear import int_layernorm

        return int_layernorm(x, self.gamma, self.beta, self.mult, self.shift, eps_q=self.eps_q)


@dataclass
class BlockParams:
    """Integer parameters of one encoder block and (optionally) the token selector before it."""

    dim: int
    heads: int
    mlp: int
    ln1: LayerNormParams
    qkv: Linear
    qk: tuple[int, int]
    av: tuple[int, int]
    proj: Linear
    add1: tuple[int, int, int]
    ln2: LayerNormParams
    fc1: Linear
    fc2: Linear
    add2: tuple[int, int, int]
    sel_ln: LayerNormParams | None = None
    sel_mlp1: list[Linear] | None = None
    sel_mlp2: list[list[Linear]] | None = None
    sel_wmlp: list[Linear] | None = None
    threshold: int = 64

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


def _linear(gen: torch.Generator, k: int, n: int, bias_std: float = 0.0, bias_offset=None) -> Linear:
    w = torch.randint(-128, 128, (k, n), generator=gen)
    mult, shift = _requant_for(k)
    bias = torch.zeros(n, dtype=torch.int64)
    if bias_std:
        bias = (torch.randn(n, generator=gen) * bias_std).round().to(torch.int64)
    if bias_offset is not None:
        bias = bias + bias_offset
    return Linear(w, bias, torch.full((n,), mult), torch.full((n,), shift))


def _layernorm(gen: torch.Generator, dim: int) -> LayerNormParams:
    from vitforge.quant.fixed import quantize_multiplier
    from vitforge.quant.nonlinear import LN_NORM_FRAC

    gamma = torch.randint(40, 128, (dim,), generator=gen)
    beta = torch.randint(-(1 << 14), 1 << 14, (dim,), generator=gen)
    mult, shift = quantize_multiplier(_TARGET_STD / (100.0 * (1 << LN_NORM_FRAC)))
    return LayerNormParams(gamma, beta, mult, shift, eps_q=1)


def make_block_params(*, dim: int, heads: int, mlp: int, selector: bool, seed: int,
                      prune_bias: int = 0, threshold: int = 64) -> BlockParams:
    """Random block (and selector) parameters with requantizations that keep codes spread.

    ``prune_bias`` is added to the selector's "prune" logit bias (large: every token pruned).
    """
    from vitforge.quant.fixed import quantize_multiplier

    gen = torch.Generator().manual_seed(seed)
    hd = dim // heads
    add = quantize_multiplier(0.7)
    p = BlockParams(
        dim=dim, heads=heads, mlp=mlp,
        ln1=_layernorm(gen, dim), qkv=_linear(gen, dim, 3 * dim, 2000.0),
        qk=_requant_for(hd, 24.0), av=_requant_for(8, 40.0, 20.0),
        proj=_linear(gen, dim, dim, 2000.0), add1=(add[0], add[0], add[1]),
        ln2=_layernorm(gen, dim), fc1=_linear(gen, dim, mlp, 2000.0), fc2=_linear(gen, mlp, dim, 2000.0),
        add2=(add[0], add[0], add[1]), threshold=threshold,
    )
    if selector:
        p.sel_ln = _layernorm(gen, hd)
        p.sel_mlp1 = [_linear(gen, hd, hd, 1000.0) for _ in range(heads)]
        p.sel_mlp2 = []
        for _ in range(heads):
            last_bias = torch.tensor([0, prune_bias], dtype=torch.int64)
            p.sel_mlp2.append([_linear(gen, hd, hd // 2, 1000.0), _linear(gen, hd // 2, hd // 4, 1000.0),
                               _linear(gen, hd // 4, 2, 1000.0, bias_offset=last_bias)])
        h2 = max(heads // 2, 1)
        p.sel_wmlp = [_linear(gen, heads, h2, 1000.0), _linear(gen, h2, heads, 1000.0)]
    return p


def selector_reference(x: torch.Tensor, p: BlockParams, num) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The token selector from quant/ calls only: ``(tokens, keep, fused)`` of ``select_tokens``."""
    from vitforge.quant import nonlinear as nl
    from vitforge.quant import selector as qsel

    hd, half = p.head_dim, p.head_dim // 2
    scores = []
    for i in range(p.heads):
        z = nl.int_gelu(p.sel_mlp1[i](p.sel_ln(x[:, i * hd:(i + 1) * hd])), num.gelu_in, num.gelu_out)
        glob = qsel.token_mean(z[:, half:], dim=0)
        z = torch.cat([z[:, :half], glob[None, :].expand(z.shape[0], -1)], dim=1)
        l1, l2, l3 = p.sel_mlp2[i]
        y = nl.int_gelu(l1(z), num.gelu_in, num.gelu_out)
        y = nl.int_gelu(l2(y), num.gelu_in, num.gelu_out)
        prob = nl.int_softmax(l3(y), num.softmax_in, num.softmax_out, num.exp_out)
        scores.append(prob[:, 0])
    a = qsel.token_mean(x.reshape(x.shape[0], p.heads, hd), dim=-1)
    a = nl.int_gelu(p.sel_wmlp[0](a), num.gelu_in, num.gelu_out)
    a = nl.int_sigmoid(p.sel_wmlp[1](a), num.sigmoid_in, num.sigmoid_out)
    return qsel.select_tokens(x, torch.stack(scores, dim=1), a, p.threshold)


def block_reference(x: torch.Tensor, p: BlockParams, num) -> torch.Tensor:
    """One encoder block from quant/ calls only: ``x: (N, D)`` int8 codes -> ``(N, D)``."""
    from vitforge.quant import nonlinear as nl
    from vitforge.quant.ops import gemm, residual_add

    d, hd = p.dim, p.head_dim
    qkv = p.qkv(p.ln1(x))
    heads = []
    for h in range(p.heads):
        q = qkv[:, h * hd:(h + 1) * hd]
        k = qkv[:, d + h * hd:d + (h + 1) * hd]
        v = qkv[:, 2 * d + h * hd:2 * d + (h + 1) * hd]
        s = gemm(q, k.T, None, p.qk[0], p.qk[1])
        prob = nl.int_softmax(s, num.softmax_in, num.softmax_out, num.exp_out)
        heads.append(gemm(prob, v, None, p.av[0], p.av[1]))
    x = residual_add(x, p.proj(torch.cat(heads, dim=1)), *p.add1)
    h = nl.int_gelu(p.fc1(p.ln2(x)), num.gelu_in, num.gelu_out)
    return residual_add(x, p.fc2(h), *p.add2)


def reference(x: torch.Tensor, p: BlockParams, num) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Selector (if ``p`` has one) then the block: ``(output tokens, keep mask or None)``."""
    keep = None
    if p.sel_mlp1 is not None:
        x, keep, _ = selector_reference(x, p, num)
    return block_reference(x, p, num), keep


@dataclass
class BlockProgram:
    """The instruction stream of one (selector +) encoder block and the memory contents it needs.

    ``act``/``wt``: ``{word address: words}`` to preload; ``prm``: parameter words from address
    0; ``x_addr``: where the input tokens go; ``out_addr``/``out_stride``: where the output is
    (also sent through ``STORE``, ``row_words(D)`` words per token).
    """

    instrs: list[Instr]
    act: dict[int, list[int]]
    wt: dict[int, list[int]]
    prm: list[int]
    x_addr: int
    out_addr: int
    out_stride: int


class _Bump:
    def __init__(self, depth: int, what: str, start: int = 0):
        self.top, self.depth, self.what = start, depth, what

    def take(self, words: int) -> int:
        addr = self.top
        self.top += words
        if self.top > self.depth:
            raise ValueError(f"{self.what} overflow: the block needs {self.top} words, the memory has {self.depth}")
        return addr


def _ln_words(cfg: HwConfig, ln: LayerNormParams) -> list[int]:
    """LayerNorm parameter words (hw/controller.py's contract): beta/gamma per lane, then eps/mult/shift."""
    gamma_bits = torch.as_tensor(ln.gamma) & 0xFF
    words = pack_params(cfg, ln.beta, gamma_bits, torch.zeros_like(gamma_bits))
    return words + pack_params(cfg, torch.tensor([ln.eps_q]), torch.tensor([ln.mult]), torch.tensor([ln.shift]))


def block_program(cfg: HwConfig, p: BlockParams, n_tokens: int) -> BlockProgram:
    """The hw/isa.py stream computing :func:`reference` on ``n_tokens`` input tokens.

    With a selector, every instruction after ``SELECT`` sizes its token dimension with
    :data:`~vitforge.hw.isa.TOKENS` (the count the selector produced); without, with ``n_tokens``.
    """
    from vitforge.hw.isa import PER_TOKEN, TOKENS

    if not 1 <= n_tokens <= cfg.max_tokens:
        raise ValueError(f"n_tokens must be in 1..max_tokens={cfg.max_tokens}, not {n_tokens}")
    d, hd, mlp, heads = p.dim, p.head_dim, p.mlp, p.heads
    rw = cfg.row_words
    act, wt = _Bump(cfg.act_depth, "activation scratchpad"), _Bump(cfg.weight_depth, "weight scratchpad")
    prm_words: list[int] = []
    act_init: dict[int, list[int]] = {}
    wt_init: dict[int, list[int]] = {}
    prog: list[Instr] = []

    def params(words: list[int]) -> int:
        addr = len(prm_words)
        prm_words.extend(words)
        if len(prm_words) > cfg.param_depth:
            raise ValueError(f"parameter scratchpad overflow: {len(prm_words)} > param_depth {cfg.param_depth}")
        return addr

    def per_tensor(n: int, mult: int, shift: int) -> int:
        return params(pack_params(cfg, torch.zeros(n, dtype=torch.int64), torch.full((n,), mult),
                                  torch.full((n,), shift)))

    def weights(w: torch.Tensor) -> tuple[int, int]:
        words = pack_matrix(cfg, w)
        addr = wt.take(len(words))
        wt_init[addr] = words
        return addr, rw(w.shape[1])

    def matrix(rows: int, cols: int, stride: int | None = None) -> tuple[int, int]:
        stride = rw(cols) if stride is None else stride
        return act.take(rows * stride), stride

    def gemm(a, m, k, lin_or_b, dst, prm, n=None, b_act=0, b_trans=0):
        if isinstance(lin_or_b, Linear):
            b_addr, b_stride = weights(lin_or_b.w)
            n = lin_or_b.w.shape[1]
        else:
            b_addr, b_stride = lin_or_b
        prog.append(Instr(Op.GEMM, a_addr=a[0], a_stride=a[1], b_addr=b_addr, b_stride=b_stride, dst_addr=dst[0],
                          dst_stride=dst[1], param_addr=prm, m=m, k=k, n=n, b_act=b_act, b_trans=b_trans))

    def linear(a, m, lin: Linear, dst):
        gemm(a, m, lin.w.shape[0], lin, dst, params(pack_params(cfg, lin.bias, lin.mult, lin.shift)))

    def rowwise(op, src, dst, rows, cols, prm=0):
        prog.append(Instr(op, src_addr=src[0], src_stride=src[1], dst_addr=dst[0], dst_stride=dst[1],
                          rows=rows, cols=cols, param_addr=prm))

    x = matrix(cfg.max_tokens, d)
    n = n_tokens
    if p.sel_mlp1 is not None:
        if heads > cfg.lanes or hd % (2 * cfg.lanes):
            raise ValueError(f"the selector program needs heads <= lanes and head_dim a multiple of 2 x lanes, "
                             f"not heads={heads}, head_dim={hd}, lanes={cfg.lanes}")
        half = hd // 2
        ident = per_tensor(max(half, heads), 1, 0)
        ln_prm = params(_ln_words(cfg, p.sel_ln))
        ones_row = matrix(1, n)
        act_init[ones_row[0]] = pack_matrix(cfg, torch.ones((1, n), dtype=torch.int64))
        ones_col = matrix(n, 1)
        act_init[ones_col[0]] = pack_matrix(cfg, torch.ones((n, 1), dtype=torch.int64))
        mean_prm = per_tensor(half, *mean_requant(n))
        ln_h, z, glob = matrix(n, hd), matrix(n, hd), matrix(1, half)
        zr, y1, y2, y3 = matrix(n, hd), matrix(n, half), matrix(n, hd // 4), matrix(n, 2)
        t1, t2 = matrix(n, half), matrix(n, hd // 4)
        p_all = matrix(n, heads * cfg.lanes)  # head i's (keep, prune) row in word i
        for i in range(heads):
            rowwise(Op.LAYERNORM, (x[0] + i * hd // cfg.lanes, x[1]), ln_h, n, hd, ln_prm)
            linear(ln_h, n, p.sel_mlp1[i], zr)
            rowwise(Op.GELU, zr, z, n, hd)
            gemm(ones_row, 1, n, (z[0] + half // cfg.lanes, z[1]), glob, mean_prm, n=half, b_act=1)
            gemm(ones_col, n, 1, glob, (z[0] + half // cfg.lanes, z[1]), ident, n=half, b_act=1)
            l1, l2, l3 = p.sel_mlp2[i]
            linear(z, n, l1, t1)
            rowwise(Op.GELU, t1, y1, n, half)
            linear(y1, n, l2, t2)
            rowwise(Op.GELU, t2, y2, n, hd // 4)
            linear(y2, n, l3, y3)
            rowwise(Op.SOFTMAX, y3, (p_all[0] + i, p_all[1]), n, 2)
        # Scores: keep probability (lane 0 of each head's word) gathered by a 0/1 GEMM.
        sel = torch.zeros((heads * cfg.lanes, heads), dtype=torch.int64)
        for i in range(heads):
            sel[i * cfg.lanes, i] = 1
        scores = matrix(n, 2 * cfg.lanes, stride=2)
        gemm(p_all, n, heads * cfg.lanes, weights(sel), scores, ident, n=heads)
        # Head weights: per-token mean of each head's channels, weight MLP, sigmoid.
        ind = torch.zeros((d, heads), dtype=torch.int64)
        for i in range(heads):
            ind[i * hd:(i + 1) * hd, i] = 1
        am, ah, ag, aw = matrix(n, heads), matrix(n, heads), matrix(n, heads), matrix(n, heads)
        gemm(x, n, d, weights(ind), am, per_tensor(heads, *mean_requant(hd)), n=heads)
        linear(am, n, p.sel_wmlp[0], ah)
        rowwise(Op.GELU, ah, ag, n, p.sel_wmlp[0].w.shape[1])
        linear(ag, n, p.sel_wmlp[1], aw)
        rowwise(Op.SIGMOID, aw, (scores[0] + 1, 2), n, heads)
        threshold = params(pack_params(cfg, torch.tensor([p.threshold]), torch.tensor([0]), torch.tensor([0])))
        x2 = matrix(cfg.max_tokens, d)
        prog.append(Instr(Op.SELECT, scores_addr=scores[0], tokens_addr=x[0], tokens_stride=x[1], dst_addr=x2[0],
                          n_tokens=n, dim=d, param_addr=threshold))
        x, n = x2, TOKENS
    t = cfg.max_tokens
    count = (PER_TOKEN | rw(d)) if n == TOKENS else n * rw(d)
    h1 = matrix(t, d)
    rowwise(Op.LAYERNORM, x, h1, n, d, params(_ln_words(cfg, p.ln1)))
    qkv = matrix(t, 3 * d)
    linear(h1, n, p.qkv, qkv)
    s, prob, o = matrix(t, t), matrix(t, t), matrix(t, d)
    qk_prm, av_prm = per_tensor(t, *p.qk), per_tensor(hd, *p.av)
    for h in range(heads):
        q_addr = qkv[0] + h * hd // cfg.lanes
        k_addr = qkv[0] + (d + h * hd) // cfg.lanes
        v_addr = qkv[0] + (2 * d + h * hd) // cfg.lanes
        gemm((q_addr, qkv[1]), n, hd, (k_addr, qkv[1]), s, qk_prm, n=n, b_act=1, b_trans=1)
        rowwise(Op.SOFTMAX, s, prob, n, n)
        gemm(prob, n, n, (v_addr, qkv[1]), (o[0] + h * hd // cfg.lanes, o[1]), av_prm, n=hd, b_act=1)
    a1 = matrix(t, d)
    linear(o, n, p.proj, a1)
    x3 = matrix(t, d)
    prog.append(Instr(Op.ADD, a_addr=x[0], b_addr=a1[0], dst_addr=x3[0], count=count, mult_a=p.add1[0],
                      mult_b=p.add1[1], shift=p.add1[2]))
    rowwise(Op.LAYERNORM, x3, h1, n, d, params(_ln_words(cfg, p.ln2)))
    f, g = matrix(t, mlp), matrix(t, mlp)
    linear(h1, n, p.fc1, f)
    rowwise(Op.GELU, f, g, n, mlp)
    linear(g, n, p.fc2, a1)
    out = matrix(t, d)
    prog.append(Instr(Op.ADD, a_addr=x3[0], b_addr=a1[0], dst_addr=out[0], count=count, mult_a=p.add2[0],
                      mult_b=p.add2[1], shift=p.add2[2]))
    prog.append(Instr(Op.STORE, mem=0, addr=out[0], count=count))
    prog.append(Instr(Op.END))
    if len(prog) > cfg.imem_depth:
        raise ValueError(f"the block program has {len(prog)} instructions; imem_depth is {cfg.imem_depth}")
    return BlockProgram(prog, act_init, wt_init, prm_words, x[0] if p.sel_mlp1 is None else 0, out[0], out[1])


def choose_threshold(fused: torch.Tensor, keep: str) -> int:
    """A selector threshold for ``keep``: ``"all"`` (0), ``"class_only"`` (above every non-class
    fused score; raises if one is already 127) or ``"mixed"`` (some tokens kept, some pruned)."""
    others = sorted({int(f) for f in fused[1:]})
    if keep == "all":
        return 0
    if keep == "class_only":
        if others and others[-1] >= 127:
            raise ValueError("a non-class token has fused score 127: no threshold prunes it")
        return (others[-1] + 1) if others else 127
    if keep == "mixed":
        if len(others) < 2:
            raise ValueError(f"fused scores {others} allow no threshold that both keeps and prunes")
        return others[len(others) // 2]
    raise ValueError(f"keep must be 'all', 'mixed' or 'class_only', not {keep!r}")
