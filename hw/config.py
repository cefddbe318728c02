"""Hardware configuration: the one source of truth for every generated block, bench and program.

:class:`HwConfig` holds the accelerator's parameters (PE array shape, scratchpad depths, which
units are built, the largest model it must hold, the target clock). Bit widths are not restated
here: they come from :class:`~vitforge.quant.config.NumericsConfig` (``numerics``) and
:mod:`vitforge.quant.fixed` (accumulator and requantization widths). Everything derived
(word widths, address widths, buffer sizes, resource estimates) is a property.

Memory organization (the contract between the controller, the GEMM feeder and the program
generator):

* Every scratchpad word holds ``lanes = pe_cols`` int8 elements. A ``(rows, cols)`` matrix is
  stored row-major with a row stride of ``ceil(cols / lanes)`` words; the padding lanes of the
  last word of a row hold don't-care values that no unit reads as data.
* The activation scratchpad (``act_depth`` words) holds all activations of one encoder block;
  the weight scratchpad (``weight_depth`` words) holds weights ``(in, out)`` row-major; the
  parameter scratchpad (``param_depth`` words) holds, per word, ``lanes`` output channels of
  (int32 bias, uint16 requant multiplier, 6-bit shift); the instruction memory holds
  ``imem_depth`` instructions of :mod:`vitforge.hw.isa`.
* There is no accumulator scratchpad: the GEMM engine is output-stationary and accumulates the
  whole reduction (any K) in the PE registers.

Presets are :func:`dataclasses.replace` of :data:`BASE`; :func:`get_preset` looks them up.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

from vitforge.quant.config import DEFAULT_NUMERICS, NumericsConfig
from vitforge.quant.fixed import ACC_BITS, REQUANT_MULT_BITS, FixedFormat

from .isa import INSTR_BITS, LOAD_QUEUE_BITS, MAX_ADDR_BITS, MAX_DIM_BITS, SHIFT_BITS

#: The datapath is built for this activation and weight width (NumericsConfig allows more).
DATAPATH_BITS = 8
#: Two int8 multiplies sharing one operand pack into one DSP48E2 (AMD WP486; ``dsp_packing``).
MACS_PER_DSP = 2
#: DSP48E2s per requantizer lane: ``acc * mult`` (32 x 16 bits) is wider than one DSP48E2's
#: 27 x 18 multiplier, and Yosys splits it into two.
REQUANT_DSPS_PER_LANE = 2
#: DSP48E2s per fused GELU lane (``fuse_gelu``): the polynomial's two multiplications (Yosys maps 128
#: for zcu102's 64 lanes, README "Issue #13, item 1: GELU in the GEMM drain path").
GELU_DSPS_PER_LANE = 2
#: The largest |a * b| of two int8 codes: (-128) * (-128).
MAX_INT8_PRODUCT = 1 << (2 * (DATAPATH_BITS - 1))
#: One BRAM36 as 512 words x 72 bits.
BRAM36_DEPTH, BRAM36_WIDTH = 512, 72
#: AXI4 data widths the memory port may have.
BUS_BITS = (32, 64, 128, 256, 512, 1024)
#: The longest AXI4 INCR burst, in beats.
AXI_MAX_BURST = 256
#: No AXI4 burst may cross this many bytes' boundary.
AXI_BOUNDARY = 4096


def _check_positive(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")


@dataclass(frozen=True)
class HwConfig:
    """Parameters of one accelerator build. Validated on construction; derived values are properties.

    Attributes:
        numerics: bit widths and fixed-point formats (the integer contract of quant/).
        pe_rows: PE array rows: output rows (tokens) computed at once.
        pe_cols: PE array columns: output channels computed at once; also the scratchpad word
            width in int8 lanes (``lanes``).
        act_depth: activation scratchpad depth in words.
        weight_depth: weight scratchpad depth in words.
        param_depth: parameter scratchpad depth in words (``lanes`` channels of bias/mult/shift each).
        imem_depth: instruction memory depth in instructions.
        max_tokens: most tokens of one image (class token and package token included).
        max_embed_dim: largest embedding dimension D.
        max_mlp_dim: largest MLP hidden dimension.
        max_heads: most attention heads (head width ``D / heads`` must be a multiple of ``lanes``).
        softmax, gelu, layernorm, sigmoid, selector: which units are built.
        clock_mhz: target clock frequency in MHz.
        bus_bits: data width of the AXI4 memory port (:mod:`vitforge.hw.axi`): 32..1024, a power of
            two. A scratchpad word travels as ``beats(bits)`` beats.
        axi_addr_bits: byte-address width of the AXI4 memory port (the ZynqMP's HP ports take 49; 40
            bits cover its DDR).
        axi_burst: the longest read burst in beats (1..256, AXI4 INCR).
        axi_max_inflight: most read beats requested and not yet received (at least ``axi_burst``).
        axi_align: byte alignment of the host's buffers (a power of two, 4 KiB at least: a burst of
            ``axi_burst`` beats then never crosses a 4 KiB boundary).
        load_queue: LOADs with ``nowait`` that the loader queues behind the one it is loading
            (1..``2**LOAD_QUEUE_BITS - 1``; :mod:`vitforge.hw.isa`).
        dsp_packing: compute the products of PE rows ``2p`` and ``2p + 1`` (which share ``b[j]``)
            with one multiplication of the packed operand ``(a[2p] << PACK_SHIFT) + a[2p + 1]``
            (AMD WP486: two int8 MACs per DSP48E2), split and sign-corrected; an odd ``pe_rows``
            leaves the last row unpaired. Off: one multiplier per PE.
        unit_lanes: elements per cycle of the row-wise units (GELU, sigmoid, softmax, LayerNorm): a
            positive divisor of ``lanes``. At 1 the row streamer hands the units one element per cycle
            with two bubble cycles per word read; above 1 it reads one word per cycle (pipelined) and
            hands them ``unit_lanes`` elements per cycle, so a row of ``cols`` costs about
            ``ceil(cols / unit_lanes)`` cycles plus a fixed latency.
        fuse_gelu: build ``pe_cols`` GELU lanes (:class:`~vitforge.hw.nonlinear.GeluUnit`) into the
            GEMM engine's drain path, after the requantizer: a ``GEMM`` with its ``gelu`` flag writes
            ``int_gelu(requantize(...))`` (the GEMM's int8 output read as ``numerics.gelu_in``) and
            the compiler emits it for every GEMM whose output only feeds a ``GELU``, saving that
            instruction's pass. Needs ``gelu`` and an 8-bit ``gelu_in``/``gelu_out``. Off: the
            ``gelu`` flag is not decoded (a program using it must not run there).
        operand_cache_words: depth in words of the GEMM sequencer's operand cache (0: none; else a power
            of two of at least ``2 x lanes``), for the ``GEMM`` instructions whose B is an activation
            (``b_act``: ``Q K^T``, ``attn x V``), which otherwise read A and B one after the other on
            the activation port (``pe_rows + lanes`` read cycles a block). Its lower half keeps the
            first M tile's B words (``ceil(k / lanes) x ceil(n / lanes) x lanes``) and its upper half
            an M tile's A words (``pe_rows x ceil(k / lanes)``), as they are read. When B fitted, the
            later M tiles read B from the cache beside A; else, when A fitted, an M tile's later N
            tiles read A from it beside B: those blocks take ``max(pe_rows, lanes)`` read cycles
            (:func:`vitforge.hw.timing.cached_operand`). Operands that do not fit are read as
            without a cache. Sized from :attr:`attention_b_words` and :attr:`attention_a_words`.
    """

    numerics: NumericsConfig = field(default_factory=lambda: DEFAULT_NUMERICS)
    pe_rows: int = 4
    pe_cols: int = 4
    act_depth: int = 32768
    weight_depth: int = 16384
    param_depth: int = 256
    imem_depth: int = 512
    max_tokens: int = 65
    max_embed_dim: int = 64
    max_mlp_dim: int = 256
    max_heads: int = 4
    softmax: bool = True
    gelu: bool = True
    layernorm: bool = True
    sigmoid: bool = True
    selector: bool = True
    clock_mhz: float = 100.0
    bus_bits: int = 64
    axi_addr_bits: int = 40
    axi_burst: int = 16
    axi_max_inflight: int = 64
    axi_align: int = 4096
    load_queue: int = 4
    dsp_packing: bool = False
    unit_lanes: int = 1
    fuse_gelu: bool = False
    operand_cache_words: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.numerics, NumericsConfig):
            raise TypeError(f"numerics must be a NumericsConfig, not {type(self.numerics).__name__}")
        for name in ("act_bits", "weight_bits"):
            bits = getattr(self.numerics, name)
            if bits != DATAPATH_BITS:
                raise ValueError(f"numerics.{name} must be {DATAPATH_BITS} for the hardware datapath, not {bits}")
        for name in ("pe_rows", "pe_cols", "act_depth", "weight_depth", "param_depth", "imem_depth",
                     "max_tokens", "max_embed_dim", "max_mlp_dim", "max_heads"):
            _check_positive(getattr(self, name), name)
        for name in ("softmax", "gelu", "layernorm", "sigmoid", "selector", "dsp_packing", "fuse_gelu"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, not {getattr(self, name)!r}")
        if isinstance(self.clock_mhz, bool) or not isinstance(self.clock_mhz, (int, float)) \
                or not 0 < self.clock_mhz <= 1000:
            raise ValueError(f"clock_mhz must be in (0, 1000], not {self.clock_mhz!r}")
        if self.bus_bits not in BUS_BITS:
            raise ValueError(f"bus_bits must be one of {', '.join(map(str, BUS_BITS))} (AXI4 data widths), "
                             f"not {self.bus_bits!r}")
        for name in ("axi_addr_bits", "axi_burst", "axi_max_inflight", "axi_align"):
            _check_positive(getattr(self, name), name)
        if not 32 <= self.axi_addr_bits <= 64:
            raise ValueError(f"axi_addr_bits must be in 32..64, not {self.axi_addr_bits}")
        if self.axi_burst > AXI_MAX_BURST:
            raise ValueError(f"axi_burst must be in 1..{AXI_MAX_BURST} (AXI4 INCR bursts), not {self.axi_burst}")
        if self.axi_max_inflight < self.axi_burst:
            raise ValueError(f"axi_max_inflight {self.axi_max_inflight} must be at least axi_burst {self.axi_burst}")
        burst_bytes = self.axi_burst * self.bus_bits // 8
        if self.axi_align & (self.axi_align - 1) or self.axi_align < max(AXI_BOUNDARY, burst_bytes):
            raise ValueError(f"axi_align must be a power of two of at least {AXI_BOUNDARY} bytes and one burst "
                             f"({burst_bytes} bytes), not {self.axi_align}")
        _check_positive(self.load_queue, "load_queue")
        if self.load_queue >= 1 << LOAD_QUEUE_BITS:
            raise ValueError(f"load_queue must be in 1..{(1 << LOAD_QUEUE_BITS) - 1} (SYNC's pending field), "
                             f"not {self.load_queue}")
        _check_positive(self.unit_lanes, "unit_lanes")
        if self.fuse_gelu and not self.gelu:
            raise ValueError("fuse_gelu needs the GELU unit (gelu=True): the fused GEMM is its rows' only GELU")
        if self.fuse_gelu:
            for name in ("gelu_in", "gelu_out"):
                fmt = getattr(self.numerics, name)
                if fmt.bits != DATAPATH_BITS:
                    raise ValueError(f"fuse_gelu needs numerics.{name} of {DATAPATH_BITS} bits (the GEMM's "
                                     f"int8 output and scratchpad lanes), not {fmt}")
        cache = self.operand_cache_words
        if isinstance(cache, bool) or not isinstance(cache, int) or cache < 0 \
                or (cache and (cache & (cache - 1) or cache < 2 * self.lanes)):
            raise ValueError(f"operand_cache_words must be 0 (no operand cache) or a power of two of at least "
                             f"2 x lanes = {2 * self.lanes} words (a B block in each half), not {cache!r}")
        if self.lanes % self.unit_lanes:
            raise ValueError(f"unit_lanes must be a positive divisor of lanes = {self.lanes}, not {self.unit_lanes}")
        for name in ("act_depth", "weight_depth", "param_depth", "imem_depth"):
            depth = getattr(self, name)
            if depth > 1 << MAX_ADDR_BITS:
                raise ValueError(f"{name} must be at most 2**{MAX_ADDR_BITS} (the ISA's address width), not {depth}")
        for name in ("max_tokens", "max_embed_dim", "max_mlp_dim"):
            dim = getattr(self, name)
            if dim >= 1 << MAX_DIM_BITS:
                raise ValueError(f"{name} must be below 2**{MAX_DIM_BITS} (the ISA's size fields), not {dim}")
        if self.max_tokens >= (1 << MAX_DIM_BITS) - 1:
            raise ValueError(f"max_tokens must be below 2**{MAX_DIM_BITS} - 1 (the ISA's TOKENS marker), "
                             f"not {self.max_tokens}")
        if self.max_embed_dim % (self.max_heads * self.lanes):
            raise ValueError(
                f"max_embed_dim {self.max_embed_dim} must be a multiple of max_heads x lanes = "
                f"{self.max_heads} x {self.lanes}: each head must start on a word boundary"
            )
        if self.max_mlp_dim % self.lanes:
            raise ValueError(f"max_mlp_dim {self.max_mlp_dim} must be a multiple of lanes = {self.lanes}")
        # One GEMM operand block: pe_rows words of A, lanes words of B.
        if self.act_depth < self.pe_rows + self.lanes:
            raise ValueError(
                f"act_depth {self.act_depth} is smaller than one tile "
                f"(pe_rows + lanes = {self.pe_rows + self.lanes} words)"
            )
        if self.weight_depth < self.lanes:
            raise ValueError(f"weight_depth {self.weight_depth} is smaller than one tile ({self.lanes} words)")
        if self.act_depth < self.block_act_words:
            raise ValueError(
                f"act_depth {self.act_depth} cannot hold one encoder block at max_tokens={self.max_tokens}, "
                f"max_embed_dim={self.max_embed_dim}, max_mlp_dim={self.max_mlp_dim}: "
                f"it needs {self.block_act_words} words"
            )
        if self.weight_depth < self.layer_weight_words:
            raise ValueError(
                f"weight_depth {self.weight_depth} cannot hold the largest layer's weights "
                f"({self.layer_weight_words} words)"
            )
        if self.param_depth < self.layer_param_words:
            raise ValueError(
                f"param_depth {self.param_depth} cannot hold the widest layer's parameters "
                f"({self.layer_param_words} words)"
            )

    # --- widths ---------------------------------------------------------------------------------

    @property
    def lanes(self) -> int:
        """int8 elements per scratchpad word (= ``pe_cols``)."""
        return self.pe_cols

    @property
    def act_bits(self) -> int:
        return self.numerics.act_bits

    @property
    def weight_bits(self) -> int:
        return self.numerics.weight_bits

    @property
    def acc_bits(self) -> int:
        return ACC_BITS

    @property
    def max_gemm_k(self) -> int:
        """The longest reduction (K) of a GEMM that hw/compiler.py issues at this config's sizes.

        Its GEMMs reduce over D (QKV, fc1, the head, a selector's per-head mean), the MLP width
        (fc2), the tokens (``attn x V``, a selector's token mean), ``2 x head_dim <= 2 D`` (a
        selector's second MLP when the global half is broadcast), ``heads x lanes`` (the keep-score
        gather) and the patch features of the embedding, which the config does not bound: a
        model's patches must have at most this many features (DeiT's 768 and the demo's 48 do).
        """
        return max(2 * self.max_embed_dim, self.max_mlp_dim, self.max_tokens,
                   self.max_heads * self.lanes)

    @property
    def pe_acc_bits(self) -> int:
        """Width of the PE accumulators: the signed width of ``max_gemm_k x 2**14``, the largest
        possible ``|sum_k a*b|`` (so the sum is exact), at most ``acc_bits``. The bias add and the
        requantizer stay ``acc_bits`` wide (the accumulator is sign-extended into them)."""
        return min(self.acc_bits, (self.max_gemm_k * MAX_INT8_PRODUCT).bit_length() + 1)

    @property
    def mult_bits(self) -> int:
        return REQUANT_MULT_BITS

    @property
    def shift_bits(self) -> int:
        return SHIFT_BITS

    @property
    def word_bits(self) -> int:
        """Width of an activation or weight scratchpad word."""
        return self.lanes * self.act_bits

    @property
    def param_word_bits(self) -> int:
        """Width of a parameter word: ``lanes`` x (bias, mult, shift)."""
        return self.lanes * (self.acc_bits + self.mult_bits + self.shift_bits)

    def beats(self, bits: int) -> int:
        """AXI beats that carry one ``bits``-wide word on the memory port (zero-padded to whole beats)."""
        return -(-bits // self.bus_bits)

    def addr_bits(self, depth: int) -> int:
        """Address width of a memory of ``depth`` words."""
        return max(1, (depth - 1).bit_length())

    # --- sizes ----------------------------------------------------------------------------------

    def row_words(self, cols: int) -> int:
        """Words per matrix row of ``cols`` int8 elements."""
        return -(-cols // self.lanes)

    def row_beats(self, cols: int) -> int:
        """Row-wise unit transfers per matrix row of ``cols`` elements (``unit_lanes`` elements each)."""
        return -(-cols // self.unit_lanes)

    def matrix_words(self, rows: int, cols: int) -> int:
        return rows * self.row_words(cols)

    @property
    def block_act_words(self) -> int:
        """Activation words the encoder-block program (hw/compiler.py) needs at the max sizes.

        Live at once: input x, LayerNorm output, QKV, scores and probabilities of one head,
        attention output, the residual sum, and the MLP hidden activations (two buffers).
        """
        t, d, h = self.max_tokens, self.max_embed_dim, self.max_mlp_dim
        return (4 * self.matrix_words(t, d) + self.matrix_words(t, 3 * d)
                + 2 * self.matrix_words(t, t) + 2 * self.matrix_words(t, h))

    @property
    def layer_weight_words(self) -> int:
        """Words of the largest single layer's weights."""
        d, h = self.max_embed_dim, self.max_mlp_dim
        return max(self.matrix_words(d, 3 * d), self.matrix_words(d, h), self.matrix_words(h, d))

    @property
    def attention_b_words(self) -> int:
        """B words of the largest attention GEMM at the max sizes (what half the operand cache must hold
        for every ``Q K^T`` and ``attn x V`` to read B from it after the first M tile): ``ceil(tokens /
        lanes) x ceil(head_dim / lanes)`` blocks of ``lanes`` words, ``head_dim = max_embed_dim /
        max_heads`` (a model with fewer heads than ``max_heads`` has wider heads and may not fit)."""
        head_dim = self.max_embed_dim // self.max_heads
        return self.row_words(self.max_tokens) * self.row_words(head_dim) * self.lanes

    @property
    def attention_a_words(self) -> int:
        """A words of one M tile of the largest attention GEMM (``attn x V``, K = tokens): ``pe_rows x
        ceil(max_tokens / lanes)`` (``Q K^T``'s K, the head width, is smaller)."""
        head_dim = self.max_embed_dim // self.max_heads
        return self.pe_rows * self.row_words(max(self.max_tokens, head_dim))

    @property
    def layer_param_words(self) -> int:
        """Parameter words of the widest layer (one word per ``lanes`` output channels)."""
        widest = max(3 * self.max_embed_dim, self.max_mlp_dim, self.max_tokens)
        return self.row_words(widest)

    # --- estimates ------------------------------------------------------------------------------

    @property
    def macs(self) -> int:
        """Multiply-accumulates per cycle of the PE array."""
        return self.pe_rows * self.pe_cols

    @property
    def dsp_estimate(self) -> int:
        """DSP48E2s of the GEMM engine: one per PE, or with ``dsp_packing`` one per
        :data:`MACS_PER_DSP` rows' products (an odd last row one per PE); plus
        :data:`REQUANT_DSPS_PER_LANE` per requantization lane, and with ``fuse_gelu``
        :data:`GELU_DSPS_PER_LANE` per GELU lane. Yosys maps exactly these (tests/hw/test_synth.py);
        the other units' multipliers are not counted."""
        pe_dsps = self.pe_cols * math.ceil(self.pe_rows / MACS_PER_DSP) if self.dsp_packing else self.macs
        gelu_dsps = GELU_DSPS_PER_LANE * self.lanes if self.fuse_gelu else 0
        return pe_dsps + REQUANT_DSPS_PER_LANE * self.lanes + gelu_dsps

    def _bram36(self, depth: int, width: int) -> int:
        return math.ceil(depth / BRAM36_DEPTH) * math.ceil(width / BRAM36_WIDTH)

    @property
    def bram36_estimate(self) -> int:
        """BRAM36 blocks of the scratchpads at 512 x 72 each (the instruction memory and the GEMM's
        operand cache included)."""
        cache = self._bram36(self.operand_cache_words, self.word_bits) if self.operand_cache_words else 0
        return (self._bram36(self.act_depth, self.word_bits) + self._bram36(self.weight_depth, self.word_bits)
                + self._bram36(self.param_depth, self.param_word_bits) + self._bram36(self.imem_depth, INSTR_BITS)
                + cache)

    @property
    def peak_gops(self) -> float:
        """Peak GOPS (2 ops per MAC) at ``clock_mhz``."""
        return 2 * self.macs * self.clock_mhz / 1000

    def to_json(self) -> dict:
        """All fields as JSON-able values (numerics included); :meth:`from_json` inverts it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values: dict) -> HwConfig:
        """The config :meth:`to_json` produced (validated again)."""
        values = dict(values)
        numerics = {
            k: FixedFormat(**v) if isinstance(v, dict) else v for k, v in values.pop("numerics").items()
        }
        return cls(numerics=NumericsConfig(**numerics), **values)

    def describe(self) -> dict:
        """The fields and main derived values as a JSON-friendly dict."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "numerics"}
        out.update(lanes=self.lanes, act_bits=self.act_bits, weight_bits=self.weight_bits, acc_bits=self.acc_bits,
                   pe_acc_bits=self.pe_acc_bits, max_gemm_k=self.max_gemm_k,
                   macs=self.macs, dsp_estimate=self.dsp_estimate, bram36_estimate=self.bram36_estimate)
        return out


#: The base every preset derives from: the demo build (a 4x4 array for a tiny ViT). Its operand cache's
#: halves hold the demo's attention B (17 x 4 blocks of 4 words: 272) and A (4 rows x 17 words: 68):
#: 1,024 words of 32 bits (one RAMB36).
BASE = HwConfig(operand_cache_words=1024)

PRESETS: dict[str, HwConfig] = {
    # Tiny ViT (65 tokens, D=64, 4 heads, MLP 256): quick to simulate. Row-wise units at 2 lanes: the
    # cycle saving with pruning reaches 0.9 of the GMAC saving (README "Issue #13: where it stands");
    # BASE keeps one lane, the one-lane paths' reference.
    "demo": dataclasses.replace(BASE, unit_lanes=2),
    # ZCU102 (xczu9eg: 2,520 DSP48E2, 912 BRAM36) for DeiT-T/S (197 tokens, D<=384, 6 heads):
    # 32x64 = 2,048 MACs on 1,024 DSPs packed two per DSP (README, "Issue #13, item 3"); the
    # DSPs this frees go to the other units.
    "zcu102": dataclasses.replace(
        BASE,
        pe_rows=32,
        pe_cols=64,
        act_depth=20480,
        weight_depth=18432,  # two of the largest layer's weights: the next layer loads beside compute
        param_depth=256,  # a block's parameters (DeiT-S: 73 words) three times over; in BRAM (48 BRAM36), not LUTRAM
        imem_depth=1024,
        max_tokens=197,
        max_embed_dim=384,
        max_mlp_dim=1536,
        max_heads=6,
        clock_mhz=300.0,
        bus_bits=128,  # the PS's HP ports are 128 bits wide
        dsp_packing=True,
        # Row-wise units at 8 lanes: what the LUTs the packed PE array freed allow with a 10% LUT margin
        # on the xczu9eg (README "Resources").
        unit_lanes=8,
        # fc1 and the selector MLPs' GELUs in the GEMM drain path: a pass over the MLP activations saved.
        fuse_gelu=True,
        # The attention GEMMs' operands from the operand cache: DeiT's B (4 x 1 blocks of 64 words: 256) in
        # one half, an M tile's A (32 rows x 4 words: 128) in the other; 512 words of 512 bits, 8 BRAM36.
        operand_cache_words=512,
    ),
}


def get_preset(name: str) -> HwConfig:
    """The preset called ``name``; raises ``ValueError`` listing the valid names otherwise."""
    try:
        return PRESETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown hardware preset {name!r}; valid presets: {', '.join(sorted(PRESETS))}") from None


def with_overrides(cfg: HwConfig, items: list[str]) -> HwConfig:
    """``cfg`` with ``FIELD=VALUE`` overrides (VALUE in JSON, e.g. ``operand_cache_words=0``), as the
    synthesis scripts' ``--set`` takes them; a new config is checked like any other."""
    fields = {f.name for f in dataclasses.fields(cfg)}
    for item in items:
        name, _, text = item.partition("=")
        if name not in fields or not text:
            raise ValueError(f"an override is FIELD=VALUE with a HwConfig field ({', '.join(sorted(fields))}), "
                             f"not {item!r}")
        cfg = dataclasses.replace(cfg, **{name: json.loads(text)})
    return cfg
