"""Pure-quant reference of one encoder block (optionally behind a token selector) and random
test cases for the accelerator top.

* :func:`gemm_case` — one random GEMM instruction with its scratchpad contents (tests).
* :func:`make_block_params` / :func:`reference` — a random block (and selector) and its output
  from quant/ calls only; :func:`block_program` compiles it with :mod:`vitforge.hw.compiler`
  (the one program generator) for the benches.

The scratchpad word layout helpers (:func:`pack_matrix`, :func:`unpack_matrix`,
:func:`pack_params`) are :mod:`vitforge.hw.compiler`'s, re-exported here for the benches.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from vitforge.hw import compiler as hwp
from vitforge.hw.compiler import pack_matrix, pack_params, unpack_matrix
from vitforge.hw.config import HwConfig
from vitforge.hw.isa import Instr, Op
from vitforge.quant.fixed import REQUANT_MULT_BITS
from vitforge.quant.selector import head_weight_dims, scorer_dims

__all__ = ["Instr", "Op", "as_block", "block_program", "choose_threshold", "gemm_case", "make_block_case",
           "make_block_params", "pack_matrix", "pack_params", "reference", "selector_reference", "unpack_matrix"]

#: Largest requantization multiplier.
MMAX = (1 << REQUANT_MULT_BITS) - 1


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


def random_linear(gen: torch.Generator, k: int, n: int, bias_std: float = 0.0, bias_offset=None) -> Linear:
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
        ln1=_layernorm(gen, dim), qkv=random_linear(gen, dim, 3 * dim, 2000.0),
        qk=_requant_for(hd, 24.0), av=_requant_for(8, 40.0, 20.0),
        proj=random_linear(gen, dim, dim, 2000.0), add1=(add[0], add[0], add[1]),
        ln2=_layernorm(gen, dim), fc1=random_linear(gen, dim, mlp, 2000.0), fc2=random_linear(gen, mlp, dim, 2000.0),
        add2=(add[0], add[0], add[1]), threshold=threshold,
    )
    if selector:
        p.sel_ln = _layernorm(gen, hd)
        p.sel_mlp1 = [random_linear(gen, hd, hd, 1000.0) for _ in range(heads)]
        p.sel_mlp2 = []
        for _ in range(heads):
            last_bias = torch.tensor([0, prune_bias], dtype=torch.int64)
            pairs = list(itertools.pairwise(scorer_dims(hd)))
            p.sel_mlp2.append([random_linear(gen, a, z, 1000.0, bias_offset=last_bias if j == len(pairs) - 1 else None)
                               for j, (a, z) in enumerate(pairs)])
        p.sel_wmlp = [random_linear(gen, a, z, 1000.0) for a, z in itertools.pairwise(head_weight_dims(heads))]
    return p


def make_block_case(x: torch.Tensor, *, dim: int, heads: int, mlp: int, selector: bool, seed: int, keep: str,
                    num) -> BlockParams:
    """:func:`make_block_params` whose selector threshold realizes ``keep`` on the input ``x`` (one of
    :func:`choose_threshold`'s rules; ``"class_only"`` also biases every token towards pruning)."""
    p = make_block_params(dim=dim, heads=heads, mlp=mlp, selector=selector, seed=seed,
                          prune_bias=(1 << 20) if keep == "class_only" else 0)
    if selector:
        _, _, fused = selector_reference(x, p, num)
        p.threshold = choose_threshold(fused, keep)
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


def as_linear(lin: Linear) -> hwp.Linear:
    return hwp.Linear(lin.w, lin.bias, lin.mult, lin.shift)


def _ln(ln: LayerNormParams) -> hwp.LayerNorm:
    return hwp.LayerNorm(ln.gamma, ln.beta, ln.mult, ln.shift, ln.eps_q)


def as_block(p: BlockParams) -> hwp.Block:
    """``p`` as :mod:`vitforge.hw.compiler`'s description (the selector's LayerNorm shared by every head)."""
    selector = None
    if p.sel_mlp1 is not None:
        selector = hwp.Selector(norms=[_ln(p.sel_ln)] * p.heads, mlp1=[as_linear(lin) for lin in p.sel_mlp1],
                                mlp2=[[as_linear(lin) for lin in mlp] for mlp in p.sel_mlp2],
                                weight_mlp=[as_linear(lin) for lin in p.sel_wmlp], threshold=p.threshold)
    return hwp.Block(heads=p.heads, ln1=_ln(p.ln1), qkv=as_linear(p.qkv), qk=hwp.Requant(*p.qk),
                     av=hwp.Requant(*p.av), proj=as_linear(p.proj), add1=hwp.Add(*p.add1), ln2=_ln(p.ln2),
                     fc1=as_linear(p.fc1), fc2=as_linear(p.fc2), add2=hwp.Add(*p.add2), selector=selector)


def block_program(cfg: HwConfig, p: BlockParams, n_tokens: int) -> hwp.Program:
    """:func:`vitforge.hw.compiler.compile_block` of ``p`` on ``n_tokens`` input tokens (the
    :data:`~vitforge.hw.compiler.INPUT_BLOB` the runtime streams in)."""
    return hwp.compile_block(as_block(p), cfg, n_tokens)


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
