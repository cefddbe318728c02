"""Program compiler: an integer ViT description + :class:`~vitforge.hw.config.HwConfig` -> the
controller's instruction stream (:mod:`vitforge.hw.isa`), the memory images it needs and the
``LOAD`` table a runtime follows to feed ``dma_in``.

This is the one generator of the accelerator's programs: sw/export.py builds a :class:`Model`
from its integer model and calls :func:`compile_model`; the block benches call
:func:`compile_block`. The description is hardware neutral (integer tensors and scalars, the
operation order of :mod:`vitforge.sw.golden`); everything about words, addresses and
instructions is decided here.

What the stream computes (``x`` is the ``(tokens, D)`` int8 token matrix):

* **Embedding**: ``LOAD`` the class token into row 0 of ``x`` and the quantized patches
  (the runtime's ``input`` blob, ``(num_patches, in_features)`` int8) into a buffer; the patch
  embedding ``GEMM`` writes rows ``1..num_patches`` of ``x``; the position embedding is a
  constant ``(tokens, D)`` tensor, ``LOAD``\\ ed and added with ``ADD`` (the ``pos_add`` requant).
* **Encoder blocks** as :func:`vitforge.sw.golden` orders them; a block with a selector runs it
  first: per head ``LAYERNORM`` -> ``GEMM`` -> ``GELU`` (MLP1); the global feature (mean over the
  current tokens of the second half of MLP1's output) is a ``GEMM`` of a ones row against it
  with the ``mean`` flag (the controller divides by the live token count), broadcast back over
  the tokens by a ``GEMM`` of a ones column; MLP2 (three ``GEMM``\\ s, ``GELU`` between) and
  ``SOFTMAX`` give the head's (keep, prune) row. Keep scores are gathered into the ``SELECT``
  score rows by a 0/1 ``GEMM``; head weights are the per-token mean of each head's channels (a
  0/1 ``GEMM`` with the static requant ``floor(2**MEAN_RECIP_BITS / head_dim)``), the weight MLP
  and ``SIGMOID``. ``SELECT`` writes the kept tokens and the package token to the other ``x``
  buffer; from then on token dimensions are :data:`~vitforge.hw.isa.TOKENS` and token-sized word
  counts :data:`~vitforge.hw.isa.PER_TOKEN`.
* **GELU**: with ``HwConfig.fuse_gelu`` every ``GEMM`` -> ``GELU`` pair above (fc1, the selector
  MLPs) is one ``GEMM`` with ``gelu`` set (``_Compiler.linear_gelu``): the same codes, one pass less.
* **Head**: ``LAYERNORM`` of the class token (row 0), the classifier ``GEMM``, ``STORE`` of the
  logits row (``row_words(num_classes)`` words on ``dma_out``), ``END``.

Memories: every weight and parameter block is ``LOAD``\\ ed before its first use into the weight or
parameter scratchpad, which act as caches (a block already resident is not loaded again; when
one does not fit behind the others the cache is emptied). The weights of one encoder block (or
one selector) that fit the weight scratchpad together are loaded by one ``LOAD`` (blob
``<blocks.i|selectors.i>.weights``), and likewise their parameters (``.params``). Activations
live at fixed addresses: two token buffers (``SELECT`` reads one and writes the other), then
per-block temporaries (the MLP's hidden activations reuse the attention's QKV, scores and
probabilities when they fit there). With ``overlap_loads`` (the default), :func:`prefetch` then
moves the weight and parameter LOADs up to run beside the layers before them
(``LOAD nowait``, ``SYNC`` before their first reader).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from vitforge.quant.fixed import INT8
from vitforge.quant.selector import MEAN_RECIP_BITS

from .config import HwConfig
from .isa import PER_TOKEN, TOKENS, Instr, Mem, Op

#: Name of the runtime-supplied blob (the quantized patches of one image).
INPUT_BLOB = "input"

# --- description ---------------------------------------------------------------------------------


@dataclass
class Linear:
    """A GEMM layer: ``w: (in, out)`` int8 codes, ``bias: (out,)`` int32, per-channel ``mult``/``shift``."""

    w: torch.Tensor
    bias: torch.Tensor
    mult: torch.Tensor
    shift: torch.Tensor


@dataclass
class LayerNorm:
    """Integer LayerNorm: ``gamma: (D,)`` int8, ``beta: (D,)`` int32, per-tensor requant and ``eps_q``."""

    gamma: torch.Tensor
    beta: torch.Tensor
    mult: int
    shift: int
    eps_q: int


@dataclass
class Requant:
    """A per-tensor requantization (``Q K^T``, ``attn V``)."""

    mult: int
    shift: int


@dataclass
class Add:
    """A residual add's ``(mult_a, mult_b, shift)``."""

    mult_a: int
    mult_b: int
    shift: int


@dataclass
class Selector:
    """A token selector: per head ``norms[h]``, ``mlp1[h]``, ``mlp2[h]`` (three layers); the head-weight
    MLP ``weight_mlp`` (two layers); the keep ``threshold`` (Q0.7 code)."""

    norms: list[LayerNorm]
    mlp1: list[Linear]
    mlp2: list[list[Linear]]
    weight_mlp: list[Linear]
    threshold: int


@dataclass
class Block:
    """One encoder block (and the selector before it, if any)."""

    heads: int
    ln1: LayerNorm
    qkv: Linear
    qk: Requant
    av: Requant
    proj: Linear
    add1: Add
    ln2: LayerNorm
    fc1: Linear
    fc2: Linear
    add2: Add
    selector: Selector | None = None

    @property
    def dim(self) -> int:
        return int(self.qkv.w.shape[0])

    @property
    def mlp(self) -> int:
        return int(self.fc1.w.shape[1])


@dataclass
class Model:
    """A whole ViT: ``cls: (D,)`` and ``pos: (tokens, D)`` int8 codes; the patch embedding takes
    ``(num_patches, in_features)`` int8 patches."""

    patch_embed: Linear
    cls: torch.Tensor
    pos: torch.Tensor
    pos_add: Add
    blocks: list[Block]
    norm: LayerNorm
    head: Linear

    @property
    def num_tokens(self) -> int:
        return int(self.pos.shape[0])


# --- output ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """One ``LOAD``: ``count`` words of blob ``blob`` from word ``offset`` into ``mem`` at ``addr``."""

    blob: str
    offset: int
    count: int
    mem: Mem
    addr: int


@dataclass
class Program:
    """A compiled program.

    Attributes:
        instrs: the instruction stream.
        blobs: memory images by name (unsigned words: activation/weight words of ``lanes`` int8,
            parameter words of :func:`vitforge.hw.gemm.param_word_layout`); the runtime supplies
            :data:`INPUT_BLOB` (see :attr:`input_shape`).
        loads: one entry per ``LOAD`` instruction, in program order.
        input_shape: ``(rows, cols)`` of the input matrix (packed with :func:`pack_matrix`).
        output_rows, output_cols: the matrix the program sends on ``dma_out`` (``STORE``), rows
            counted in tokens if ``output_rows`` is :data:`~vitforge.hw.isa.TOKENS`.
        layers: per instruction, the layer it belongs to (``embed``, ``selectors.<i>``,
            ``blocks.<i>``, ``head``): what runtimes and the latency model report cycles by.
    """

    instrs: list[Instr]
    blobs: dict[str, list[int]]
    loads: list[Load]
    input_shape: tuple[int, int]
    output_rows: int
    output_cols: int
    layers: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.layers and len(self.layers) != len(self.instrs):
            raise ValueError(f"{len(self.layers)} layer names for {len(self.instrs)} instructions")

    def layer_names(self) -> list[str]:
        """The layers in program order, each once."""
        return list(dict.fromkeys(self.layers))

    def dma_words(self, inputs: dict[str, list[int]]) -> list[int]:
        """Every word ``dma_in`` must carry, in order; ``inputs`` holds the runtime blobs."""
        out: list[int] = []
        for ld in self.loads:
            blob = inputs[ld.blob] if ld.blob in inputs else self.blobs[ld.blob]
            words = blob[ld.offset:ld.offset + ld.count]
            if len(words) != ld.count:
                raise ValueError(f"blob {ld.blob!r} has {len(blob)} words; a LOAD needs {ld.offset}+{ld.count}")
            out += words
        return out

    def load_table(self) -> list[dict]:
        """The LOAD table as JSON-able rows."""
        return [{"blob": ld.blob, "offset": ld.offset, "count": ld.count, "mem": ld.mem.name.lower(),
                 "addr": ld.addr} for ld in self.loads]


# --- word layouts ----------------------------------------------------------------------------------


def _words_from_bytes(data: np.ndarray, word_bytes: int) -> list[int]:
    """``data`` (uint8, a whole number of ``word_bytes``-byte words, little endian) as unsigned ints."""
    if not data.any():  # zero images (shape-only programs, empty parameters): no per-word work
        return [0] * (data.size // word_bytes)
    if word_bytes <= 8 and 8 % word_bytes == 0:
        return np.frombuffer(data.tobytes(), dtype=f"<u{word_bytes}").tolist()
    raw = data.tobytes()
    return [int.from_bytes(raw[i:i + word_bytes], "little") for i in range(0, len(raw), word_bytes)]


def _int64(x) -> np.ndarray:
    """An integer tensor, array or sequence as an int64 numpy array."""
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.int64).numpy()
    return np.asarray(x, dtype=np.int64)


def pack_matrix(cfg: HwConfig, x, stride: int | None = None) -> list[int]:
    """``x: (rows, cols)`` int8 codes -> ``rows * stride`` words (unsigned ints), padding lanes 0.

    Element ``c`` of a row is lane ``c % lanes`` (bits ``[8 (c % lanes), 8 (c % lanes) + 8)``) of word
    ``c // lanes``; vectorized (numpy), one Python step per word.
    """
    x = _int64(x)
    if x.ndim != 2:
        raise ValueError(f"pack_matrix needs a 2-D matrix, not shape {tuple(x.shape)}")
    rows, cols = x.shape
    stride = cfg.row_words(cols) if stride is None else stride
    if stride < cfg.row_words(cols):
        raise ValueError(f"row stride {stride} words is too small for {cols} columns ({cfg.row_words(cols)} words)")
    if cfg.act_bits != 8:
        raise ValueError(f"pack_matrix packs 8-bit lanes, not {cfg.act_bits}-bit ones")
    lanes = cfg.lanes
    padded = np.zeros((rows, stride * lanes), dtype=np.uint8)
    padded[:, :cols] = (x & 0xFF).astype(np.uint8)
    return _words_from_bytes(padded, lanes)


def unpack_matrix(cfg: HwConfig, words: list[int], rows: int, cols: int, stride: int | None = None,
                  signed: bool = True) -> torch.Tensor:
    """Words -> ``(rows, cols)`` int64 codes (signed int8 unless ``signed=False``)."""
    stride = cfg.row_words(cols) if stride is None else stride
    lanes = cfg.lanes
    raw = b"".join(int(w).to_bytes(lanes, "little") for w in words[:rows * stride])
    lanes_u8 = np.frombuffer(raw, dtype=np.uint8).reshape(rows, stride * lanes)[:, :cols]
    out = lanes_u8.view(np.int8) if signed else lanes_u8
    return torch.from_numpy(out.astype(np.int64))


def pack_params(cfg: HwConfig, bias, mult, shift) -> list[int]:
    """Per-channel ``bias`` (int32), ``mult`` (uint16), ``shift`` -> ``row_words(n)`` parameter words
    (:func:`vitforge.hw.gemm.param_word_layout`: lane ``j`` in bits ``[j P, (j + 1) P)`` with
    ``P = acc_bits + mult_bits + shift_bits``, bias lowest; padding lanes 0). Vectorized."""
    bias, mult, shift = (_int64(v).reshape(-1) for v in (bias, mult, shift))
    n, lanes = len(bias), cfg.lanes
    fields = ((bias, cfg.acc_bits), (mult, cfg.mult_bits), (shift, cfg.shift_bits))
    for (values, width), name in zip(fields, ("bias", "mult", "shift"), strict=True):
        lo = -(1 << (width - 1)) if name == "bias" else 0
        hi = (1 << (width - 1)) - 1 if name == "bias" else (1 << width) - 1
        if len(values) != n or (n and (values.min() < lo or values.max() > hi)):
            raise ValueError(f"parameter {name} must be {n} values in {lo}..{hi}")
    words = cfg.row_words(n)
    lane_bits = sum(width for _, width in fields)
    bits = np.zeros((words * lanes, lane_bits), dtype=np.uint8)
    offset = 0
    for values, width in fields:
        unsigned = values.astype(np.int64) & ((1 << width) - 1)
        bits[:n, offset:offset + width] = (unsigned[:, None] >> np.arange(width)) & 1
        offset += width
    word_bits = lanes * lane_bits
    packed = np.packbits(bits.reshape(words, word_bits), axis=1, bitorder="little")
    return _words_from_bytes(packed, packed.shape[1])


def layernorm_words(cfg: HwConfig, ln: LayerNorm) -> list[int]:
    """LayerNorm parameter words (hw/controller.py's contract): per channel lane ``bias = beta`` and
    ``mult`` = gamma as int8 two's complement in its low 8 bits; then one word with ``eps_q``,
    ``mult``, ``shift`` in lane 0."""
    gamma = torch.as_tensor(ln.gamma, dtype=torch.int64)
    words = pack_params(cfg, ln.beta, gamma & 0xFF, torch.zeros_like(gamma))
    return words + pack_params(cfg, [ln.eps_q], [ln.mult], [ln.shift])


def threshold_words(cfg: HwConfig, threshold: int) -> list[int]:
    """The ``SELECT`` parameter word: the threshold in lane 0's bias."""
    return pack_params(cfg, [threshold], [0], [0])


# --- compiler ----------------------------------------------------------------------------------------


class _Bump:
    def __init__(self, depth: int, what: str, start: int = 0):
        self.top, self.depth, self.what = start, depth, what

    def take(self, words: int) -> int:
        addr = self.top
        self.top += words
        if self.top > self.depth:
            raise ValueError(f"{self.what} overflow: the program needs {self.top} words, the memory has {self.depth}")
        return addr


class _Cache:
    """A scratchpad used as a cache of named blobs: resident blobs are reused; when a blob does not
    fit behind the others, the memory is emptied first."""

    def __init__(self, depth: int, what: str):
        self.depth, self.what = depth, what
        self.top = 0
        self.resident: dict[str, int] = {}

    def place(self, name: str, words: int) -> tuple[int, bool]:
        """(address, whether it must be loaded)."""
        if name in self.resident:
            return self.resident[name], False
        if words > self.depth:
            raise ValueError(f"{name} needs {words} words; the {self.what} has {self.depth}")
        if self.top + words > self.depth:
            self.top, self.resident = 0, {}
        addr, self.top = self.top, self.top + words
        self.resident[name] = addr
        return addr, True


@dataclass
class _Mat:
    """A matrix in the activation scratchpad: address and row stride (words)."""

    addr: int
    stride: int

    def col(self, cfg: HwConfig, col: int) -> _Mat:
        """The sub-matrix from column ``col`` (a multiple of ``lanes``) on."""
        if col % cfg.lanes:
            raise ValueError(f"column {col} does not start a word (lanes = {cfg.lanes})")
        return _Mat(self.addr + col // cfg.lanes, self.stride)

    def row(self, r: int) -> _Mat:
        return _Mat(self.addr + r * self.stride, self.stride)


@dataclass
class _Compiler:
    cfg: HwConfig
    prog: list[Instr] = field(default_factory=list)
    blobs: dict[str, list[int]] = field(default_factory=dict)
    loads: list[Load] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.layers: list[str] = []
        self.recorded: list[tuple[Mem, str, list[int]]] | None = None
        self.wt = _Cache(self.cfg.weight_depth, "weight scratchpad")
        self.prm = _Cache(self.cfg.param_depth, "parameter scratchpad")
        self.act = _Bump(self.cfg.act_depth, "activation scratchpad")

    def tag(self, layer: str) -> None:
        """Name the instructions emitted since the last call as ``layer``."""
        self.layers += [layer] * (len(self.prog) - len(self.layers))

    # memory -----------------------------------------------------------------------------------

    def blob(self, name: str, words: list[int]) -> str:
        if name in self.blobs and self.blobs[name] != words:
            raise ValueError(f"two different blobs are called {name!r}")
        self.blobs[name] = words
        return name

    def load(self, mem: Mem, addr: int, blob: str, count: int, offset: int = 0) -> None:
        self.loads.append(Load(blob, offset, count, mem, addr))
        self.prog.append(Instr(Op.LOAD, mem=mem, addr=addr, count=count))

    def resident(self, cache: _Cache, mem: Mem, name: str, words: list[int]) -> int:
        if self.recorded is not None:
            self.recorded.append((mem, name, words))
        addr, fresh = cache.place(name, len(words))
        if fresh:
            self.load(mem, addr, self.blob(name, words), len(words))
        return addr

    def weights(self, name: str, w: torch.Tensor) -> _Mat:
        return _Mat(self.resident(self.wt, Mem.WEIGHT, name, pack_matrix(self.cfg, w)), self.cfg.row_words(w.shape[1]))

    def params(self, name: str, words: list[int]) -> int:
        return self.resident(self.prm, Mem.PARAM, name, words)

    def per_tensor(self, n: int, mult: int, shift: int) -> int:
        """Parameters of a per-tensor requantization (bias 0) over ``n`` channels."""
        return self.params(f"const.requant_{n}_{mult}_{shift}",
                           pack_params(self.cfg, [0] * n, [mult] * n, [shift] * n))

    def matrix(self, rows: int, cols: int) -> _Mat:
        stride = self.cfg.row_words(cols)
        return _Mat(self.act.take(rows * stride), stride)

    # instructions -----------------------------------------------------------------------------

    def gemm(self, a: _Mat, b: _Mat, dst: _Mat, prm: int, m: int, k: int, n: int, *, b_act: bool = False,
             b_trans: bool = False, mean: bool = False, gelu: bool = False) -> None:
        if gelu and not self.cfg.fuse_gelu:
            raise ValueError("a GEMM with the fused GELU needs a config with fuse_gelu")
        if k != TOKENS and k > self.cfg.max_gemm_k:
            # The PE accumulators are exact only up to max_gemm_k steps (HwConfig.pe_acc_bits).
            raise ValueError(f"a GEMM reduces over k={k}, more than this config's max_gemm_k={self.cfg.max_gemm_k} "
                             "(the patch embedding's features, in_chans x patch_size**2, must be at most that)")
        self.prog.append(Instr(Op.GEMM, a_addr=a.addr, a_stride=a.stride, b_addr=b.addr, b_stride=b.stride,
                               dst_addr=dst.addr, dst_stride=dst.stride, param_addr=prm, m=m, k=k, n=n,
                               b_act=int(b_act), b_trans=int(b_trans), mean=int(mean), gelu=int(gelu)))

    def linear(self, name: str, lin: Linear, a: _Mat, dst: _Mat, m: int, *, gelu: bool = False) -> None:
        k, n = lin.w.shape
        b = self.weights(f"{name}.weight", lin.w)
        prm = self.params(f"{name}.param", pack_params(self.cfg, lin.bias, lin.mult, lin.shift))
        self.gemm(a, b, dst, prm, m, int(k), int(n), gelu=gelu)

    def linear_gelu(self, name: str, lin: Linear, a: _Mat, hidden: _Mat, dst: _Mat, m: int) -> None:
        """``dst = GELU(lin(a))``: with ``fuse_gelu`` one ``GEMM`` with ``gelu`` (``hidden`` unused),
        otherwise the ``GEMM`` into ``hidden`` and a ``GELU`` from it. The same codes either way: the
        GELU reads the GEMM's int8 output as ``gelu_in`` in both (the fused lanes sit after the
        requantizer)."""
        if self.cfg.fuse_gelu:
            self.linear(name, lin, a, dst, m, gelu=True)
        else:
            self.linear(name, lin, a, hidden, m)
            self.rowwise(Op.GELU, hidden, dst, m, int(lin.w.shape[1]))

    def rowwise(self, op: Op, src: _Mat, dst: _Mat, rows: int, cols: int, prm: int = 0) -> None:
        self.prog.append(Instr(op, src_addr=src.addr, src_stride=src.stride, dst_addr=dst.addr,
                               dst_stride=dst.stride, rows=rows, cols=cols, param_addr=prm))

    def layernorm(self, name: str, ln: LayerNorm, src: _Mat, dst: _Mat, rows: int) -> None:
        prm = self.params(f"{name}.param", layernorm_words(self.cfg, ln))
        self.rowwise(Op.LAYERNORM, src, dst, rows, int(ln.gamma.shape[0]), prm)

    def add(self, a: _Mat, b: _Mat, dst: _Mat, words: int, p: Add) -> None:
        if self.cfg.unit_lanes > 1 and words > 1 and dst.addr in (a.addr + 1, b.addr + 1):
            # The pipelined ADD (unit_lanes > 1) writes a word while it reads the next one: a
            # destination one word past an operand would be read before it is written.
            raise ValueError(f"ADD to word {dst.addr} overlaps its operand at {a.addr} / {b.addr} by one word; "
                             f"at unit_lanes {self.cfg.unit_lanes} the destination must equal an operand or not "
                             "overlap it")
        self.prog.append(Instr(Op.ADD, a_addr=a.addr, b_addr=b.addr, dst_addr=dst.addr, count=words,
                               mult_a=p.mult_a, mult_b=p.mult_b, shift=p.shift))

    def grouped(self, group: str, emit: Callable[[], None]) -> None:
        """Run ``emit`` with the weights (and the parameters) it uses loaded by one ``LOAD`` each.

        A dry run records the blobs ``emit`` fetches; the state is rolled back; the blobs not yet
        resident are concatenated into ``<group>.weights`` / ``<group>.params`` and loaded where the
        cache puts them (if they fit the memory together; otherwise each is loaded at its use).
        """
        saved = (len(self.prog), len(self.loads), self.act.top, dict(self.blobs), copy.deepcopy(self.wt),
                 copy.deepcopy(self.prm))
        self.recorded = []
        emit()
        used, self.recorded = self.recorded, None
        del self.prog[saved[0]:], self.loads[saved[1]:]
        self.act.top, self.blobs, self.wt, self.prm = saved[2], saved[3], saved[4], saved[5]
        for cache, mem, suffix in ((self.wt, Mem.WEIGHT, "weights"), (self.prm, Mem.PARAM, "params")):
            members = {name: words for m, name, words in used if m == mem}
            missing = {name: words for name, words in members.items() if name not in cache.resident}
            total = sum(len(words) for words in missing.values())
            if len(missing) < 2 or sum(len(words) for words in members.values()) > cache.depth:
                continue
            if cache.top + total > cache.depth:
                cache.top, cache.resident = 0, {}
                missing, total = members, sum(len(words) for words in members.values())
            name = self.blob(f"{group}.{suffix}", [w for words in missing.values() for w in words])
            addr = cache.top
            self.load(mem, addr, name, total)
            for member, words in missing.items():
                cache.resident[member] = addr
                addr += len(words)
            cache.top = addr
        emit()

    # graph ------------------------------------------------------------------------------------

    def token_words(self, n: int, cols: int) -> int:
        """The word count of ``n`` token rows (``n`` may be TOKENS)."""
        return (PER_TOKEN | self.cfg.row_words(cols)) if n == TOKENS else n * self.cfg.row_words(cols)

    def selector(self, name: str, s: Selector, x: _Mat, dst: _Mat, n: int, dim: int, heads: int) -> None:
        """The selector on ``n`` tokens of ``x`` (``n`` may be TOKENS); ``SELECT`` writes ``dst``."""
        cfg, lanes, t = self.cfg, self.cfg.lanes, self.cfg.max_tokens
        hd = dim // heads
        half = hd // 2
        if heads > lanes or hd % lanes:
            raise ValueError(f"the selector program needs heads <= lanes and head_dim a multiple of lanes, "
                             f"not heads={heads}, head_dim={hd}, lanes={lanes}")
        # The global half of MLP1's output starts on a word boundary when head_dim is a multiple of
        # 2 x lanes; otherwise (DeiT: head_dim = lanes = 64) the whole row's mean is broadcast into a
        # second head_dim-wide half of a (tokens, 2 head_dim) buffer, and MLP2's first layer reads
        # the local half from the first and the global half from the second (zero weights elsewhere:
        # the same integer sums).
        split = hd % (2 * lanes) != 0
        ones_row = self.const_act("const.ones_row", torch.ones((1, t), dtype=torch.int64))
        ones_col = self.const_act("const.ones_col", torch.ones((t, 1), dtype=torch.int64))
        ln_h, zr = self.matrix(t, hd), self.matrix(t, hd)
        z = self.matrix(t, 2 * hd if split else hd)
        glob = self.matrix(1, hd if split else half)
        t1, y1 = self.matrix(t, half), self.matrix(t, half)
        t2, y2 = self.matrix(t, hd // 4), self.matrix(t, hd // 4)
        y3 = self.matrix(t, 2)
        p_all = self.matrix(t, heads * lanes)  # head i's (keep, prune) row in word i
        for i in range(heads):
            pre = f"{name}.scorers.{i}"
            self.layernorm(f"{pre}.norm", s.norms[i], x.col(cfg, i * hd), ln_h, n)
            self.linear_gelu(f"{pre}.mlp1", s.mlp1[i], ln_h, zr, z, n)
            ident = self.per_tensor(max(hd if split else half, heads), 1, 0)
            # Global feature: the mean over the live tokens, then broadcast back over them.
            l1, l2, l3 = s.mlp2[i]
            if split:
                self.gemm(ones_row, z, glob, 0, 1, n, hd, b_act=True, mean=True)
                self.gemm(ones_col, glob, z.col(cfg, hd), ident, n, 1, hd, b_act=True)
                w = torch.zeros((2 * hd, l1.w.shape[1]), dtype=l1.w.dtype)
                w[:half], w[hd + half:] = l1.w[:half], l1.w[half:]
                self.linear_gelu(f"{pre}.mlp2.linears.0.split", replace(l1, w=w), z, t1, y1, n)
            else:
                self.gemm(ones_row, z.col(cfg, half), glob, 0, 1, n, half, b_act=True, mean=True)
                self.gemm(ones_col, glob, z.col(cfg, half), ident, n, 1, half, b_act=True)
                self.linear_gelu(f"{pre}.mlp2.linears.0", l1, z, t1, y1, n)
            self.linear_gelu(f"{pre}.mlp2.linears.1", l2, y1, t2, y2, n)
            self.linear(f"{pre}.mlp2.linears.2", l3, y2, y3, n)
            self.rowwise(Op.SOFTMAX, y3, _Mat(p_all.addr + i, p_all.stride), n, 2)
        # SELECT's score rows: two words per token (keep scores, head weights).
        scores = _Mat(self.act.take(2 * t), 2)
        gather = torch.zeros((heads * lanes, heads), dtype=torch.int64)
        for i in range(heads):
            gather[i * lanes, i] = 1
        ident = self.per_tensor(max(half, heads), 1, 0)
        self.gemm(p_all, self.weights(f"const.keep_gather_{heads}", gather), scores, ident, n, heads * lanes, heads)
        ind = torch.zeros((dim, heads), dtype=torch.int64)
        for i in range(heads):
            ind[i * hd:(i + 1) * hd, i] = 1
        am = self.matrix(t, heads)
        prm = self.per_tensor(heads, (1 << MEAN_RECIP_BITS) // hd, MEAN_RECIP_BITS)
        self.gemm(x, self.weights(f"const.head_mean_{dim}_{heads}", ind), am, prm, n, dim, heads)
        w0, w1 = s.weight_mlp
        hidden = int(w0.w.shape[1])
        ah, ag, aw = self.matrix(t, hidden), self.matrix(t, hidden), self.matrix(t, heads)
        self.linear_gelu(f"{name}.weight_mlp.linears.0", w0, am, ah, ag, n)
        self.linear(f"{name}.weight_mlp.linears.1", w1, ag, aw, n)
        self.rowwise(Op.SIGMOID, aw, _Mat(scores.addr + 1, 2), n, heads)
        thr = self.params(f"{name}.threshold", threshold_words(cfg, s.threshold))
        self.prog.append(Instr(Op.SELECT, scores_addr=scores.addr, tokens_addr=x.addr, tokens_stride=x.stride,
                               dst_addr=dst.addr, n_tokens=n, dim=dim, param_addr=thr))

    def const_act(self, name: str, x: torch.Tensor) -> _Mat:
        """A constant matrix ``LOAD``\\ ed into a new activation buffer."""
        mat = self.matrix(*x.shape)
        words = pack_matrix(self.cfg, x)
        self.load(Mem.ACT, mat.addr, self.blob(name, words), len(words))
        return mat

    def block(self, name: str, b: Block, x: _Mat, n: int) -> None:
        """One block on ``n`` tokens of ``x`` (``n`` may be TOKENS); the output replaces ``x``."""
        cfg, t, d, heads = self.cfg, self.cfg.max_tokens, b.dim, b.heads
        hd = d // heads
        h = self.matrix(t, d)
        self.layernorm(f"{name}.norm1", b.ln1, x, h, n)
        qkv = self.matrix(t, 3 * d)
        self.linear(f"{name}.attn.qkv", b.qkv, h, qkv, n)
        s, prob, o = self.matrix(t, t), self.matrix(t, t), self.matrix(t, d)
        for i in range(heads):
            qk = self.per_tensor(t, b.qk.mult, b.qk.shift)
            self.gemm(qkv.col(cfg, i * hd), qkv.col(cfg, d + i * hd), s, qk, n, hd, n, b_act=True, b_trans=True)
            self.rowwise(Op.SOFTMAX, s, prob, n, n)
            av = self.per_tensor(hd, b.av.mult, b.av.shift)
            self.gemm(prob, qkv.col(cfg, 2 * d + i * hd), o.col(cfg, i * hd), av, n, n, hd, b_act=True)
        a = self.matrix(t, d)
        self.linear(f"{name}.attn.proj", b.proj, o, a, n)
        x1 = self.matrix(t, d)
        self.add(x, a, x1, self.token_words(n, d), b.add1)
        self.layernorm(f"{name}.norm2", b.ln2, x1, h, n)
        # The MLP's first buffer reuses QKV, the scores and the probabilities (dead after the
        # attention; they lie in one run of words before o) when it fits there.
        stride = cfg.row_words(b.mlp)
        f = _Mat(qkv.addr, stride) if t * stride <= o.addr - qkv.addr else self.matrix(t, b.mlp)
        g = f if cfg.fuse_gelu else self.matrix(t, b.mlp)  # fused: GELU(fc1) goes straight to f
        self.linear_gelu(f"{name}.fc1", b.fc1, h, f, g, n)
        self.linear(f"{name}.fc2", b.fc2, g, a, n)
        self.add(x1, a, x, self.token_words(n, d), b.add2)


# --- weight prefetch ---------------------------------------------------------------------------------

#: Scratchpads whose LOADs may run beside compute (the datapath only reads them).
PREFETCHED = (Mem.WEIGHT, Mem.PARAM)


def reads(cfg: HwConfig, ins: Instr) -> list[tuple[Mem, int, int]]:
    """The weight and parameter words ``ins`` reads, as ``(mem, first, end)`` word ranges
    (``TOKENS`` sizes taken at ``cfg.max_tokens``)."""
    def size(v: int) -> int:
        return cfg.max_tokens if v == TOKENS else v

    if ins.op == Op.GEMM:
        out = []
        k, n = size(ins.k), size(ins.n)
        if not ins.b_act:
            rows, cols = (n, k) if ins.b_trans else (k, n)
            out.append((Mem.WEIGHT, ins.b_addr, ins.b_addr + max(0, rows - 1) * ins.b_stride + cfg.row_words(cols)))
        if not ins.mean:
            out.append((Mem.PARAM, ins.param_addr, ins.param_addr + cfg.row_words(n)))
        return out
    if ins.op == Op.LAYERNORM:  # the per-channel words and the trailer
        return [(Mem.PARAM, ins.param_addr, ins.param_addr + cfg.row_words(size(ins.cols)) + 1)]
    if ins.op == Op.SELECT:  # the threshold word
        return [(Mem.PARAM, ins.param_addr, ins.param_addr + 1)]
    return []


def _overlaps(ranges: list[tuple[Mem, int, int]], mem: Mem, lo: int, hi: int) -> bool:
    return any(m == mem and a < hi and lo < b for m, a, b in ranges)


def prefetch(cfg: HwConfig, prog: Program) -> Program:
    """``prog`` with its weight and parameter ``LOAD``\\ s run beside compute.

    Each such ``LOAD`` moves up, as ``LOAD nowait``, to just after the last instruction before it
    that is a ``LOAD`` (the input stream keeps its order, so :attr:`Program.loads` holds) or reads
    the words it writes; one that cannot move stays a blocking ``LOAD``. Then a ``SYNC`` goes
    before each instruction that reads words a still unfinished ``LOAD`` writes, with ``pending``
    the ``LOAD``\\ s issued after that one (they may go on). The loader holds at most
    ``cfg.load_queue + 1`` unfinished ``LOAD``\\ s, so older ones need no ``SYNC``.
    """
    layers = prog.layers or ["program"] * len(prog.instrs)
    instrs: list[Instr] = []
    names: list[str] = []
    read: list[list[tuple[Mem, int, int]]] = []
    for ins, layer in zip(prog.instrs, layers, strict=True):
        movable = ins.op == Op.LOAD and Mem(ins.mem) in PREFETCHED and not ins.count & PER_TOKEN
        at = len(instrs)
        if movable:
            while at and instrs[at - 1].op not in (Op.LOAD, Op.SYNC) and \
                    not _overlaps(read[at - 1], Mem(ins.mem), ins.addr, ins.addr + ins.count):
                at -= 1
        if at < len(instrs):
            ins = Instr(Op.LOAD, mem=ins.mem, addr=ins.addr, count=ins.count, nowait=1)
            layer = names[at - 1] if at else names[0]
        instrs.insert(at, ins)
        names.insert(at, layer)
        read.insert(at, reads(cfg, ins))
    out: list[Instr] = []
    out_names: list[str] = []
    unfinished: list[tuple[Mem, int, int]] = []  # nowait LOADs that may be unfinished, in issue order
    for ins, layer, rd in zip(instrs, names, read, strict=True):
        if ins.op == Op.LOAD:
            if ins.nowait:
                unfinished = [*unfinished, (Mem(ins.mem), ins.addr, ins.addr + ins.count)][-(cfg.load_queue + 1):]
            else:
                unfinished = []
        elif rd:
            hits = [j for j, (mem, lo, hi) in enumerate(unfinished) if _overlaps(rd, mem, lo, hi)]
            if hits:
                after = len(unfinished) - hits[-1] - 1
                out.append(Instr(Op.SYNC, pending=after))
                out_names.append(layer)
                unfinished = unfinished[hits[-1] + 1:]
        out.append(ins)
        out_names.append(layer)
    return replace(prog, instrs=out, layers=out_names if prog.layers else [])


def _check_int8_shapes(model: Model) -> None:
    d = int(model.cls.shape[0])
    if tuple(model.pos.shape) != (model.num_tokens, d):
        raise ValueError(f"pos must be (tokens, D) = (*, {d}), not {tuple(model.pos.shape)}")
    for name, t in (("cls", model.cls), ("pos", model.pos)):
        if int(t.min()) < INT8.qmin or int(t.max()) > INT8.qmax:
            raise ValueError(f"{name} must hold int8 codes")


def compile_model(model: Model, cfg: HwConfig, *, overlap_loads: bool = True) -> Program:
    """The instruction stream of one image's inference (see the module docstring); with
    ``overlap_loads``, weights and parameters load beside compute (:func:`prefetch`)."""
    _check_int8_shapes(model)
    c = _Compiler(cfg)
    n0, d = model.num_tokens, int(model.cls.shape[0])
    if n0 > cfg.max_tokens:
        raise ValueError(f"the model has {n0} tokens; max_tokens is {cfg.max_tokens}")
    x, x_other = c.matrix(cfg.max_tokens, d), c.matrix(cfg.max_tokens, d)
    base = c.act.top
    patches_shape = (n0 - 1, int(model.patch_embed.w.shape[0]))
    patches = c.matrix(*patches_shape)
    c.load(Mem.ACT, patches.addr, INPUT_BLOB, patches.stride * patches_shape[0])
    cls_words = pack_matrix(cfg, model.cls[None, :])
    c.load(Mem.ACT, x.addr, c.blob("cls", cls_words), len(cls_words))
    c.linear("patch_embed", model.patch_embed, patches, x.row(1), patches_shape[0])
    pos = c.const_act("pos", model.pos)
    c.add(x, pos, x, c.token_words(n0, d), model.pos_add)
    c.tag("embed")
    n = n0
    for i, b in enumerate(model.blocks):
        c.act.top = base
        if b.selector is not None:
            c.grouped(f"selectors.{i}", lambda b=b, x=x, x_other=x_other, n=n, i=i: c.selector(
                f"selectors.{i}", b.selector, x, x_other, n, d, b.heads))
            c.tag(f"selectors.{i}")
            x, x_other, n = x_other, x, TOKENS
            c.act.top = base
        c.grouped(f"blocks.{i}", lambda b=b, x=x, n=n, i=i: c.block(f"blocks.{i}", b, x, n))
        c.tag(f"blocks.{i}")
    c.act.top = base
    h = c.matrix(1, d)
    c.layernorm("norm", model.norm, x, h, 1)
    classes = int(model.head.w.shape[1])
    out = c.matrix(1, classes)
    c.linear("head", model.head, h, out, 1)
    c.prog += [Instr(Op.STORE, mem=Mem.ACT, addr=out.addr, count=out.stride), Instr(Op.END)]
    c.tag("head")
    prog = Program(c.prog, c.blobs, c.loads, patches_shape, 1, classes, c.layers)
    return prefetch(cfg, prog) if overlap_loads else prog


def compile_block(block: Block, cfg: HwConfig, n_tokens: int, *, overlap_loads: bool = True) -> Program:
    """One encoder block (behind its selector, if any) on ``n_tokens`` input tokens: the tokens
    come in as :data:`INPUT_BLOB` ``(n_tokens, D)``; the output tokens go out through ``STORE``
    (``overlap_loads``: as in :func:`compile_model`)."""
    if not 1 <= n_tokens <= cfg.max_tokens:
        raise ValueError(f"n_tokens must be in 1..max_tokens={cfg.max_tokens}, not {n_tokens}")
    c = _Compiler(cfg)
    d = block.dim
    x, x_other = c.matrix(cfg.max_tokens, d), c.matrix(cfg.max_tokens, d)
    base = c.act.top
    c.load(Mem.ACT, x.addr, INPUT_BLOB, n_tokens * x.stride)
    c.tag("input")
    n = n_tokens
    if block.selector is not None:
        c.grouped("selectors.0", lambda: c.selector("selectors.0", block.selector, x, x_other, n, d, block.heads))
        c.tag("selectors.0")
        x, n = x_other, TOKENS
        c.act.top = base
    c.grouped("blocks.0", lambda: c.block("blocks.0", block, x, n))
    c.tag("blocks.0")
    c.prog += [Instr(Op.STORE, mem=Mem.ACT, addr=x.addr, count=c.token_words(n, d)), Instr(Op.END)]
    c.tag("output")
    prog = Program(c.prog, c.blobs, c.loads, (n_tokens, d), n, d, c.layers)
    return prefetch(cfg, prog) if overlap_loads else prog


__all__ = ["INPUT_BLOB", "Add", "Block", "LayerNorm", "Linear", "Load", "Model", "Program", "Requant", "Selector",
           "compile_block", "compile_model", "layernorm_words", "pack_matrix", "pack_params", "prefetch", "reads",
           "threshold_words", "unpack_matrix"]
