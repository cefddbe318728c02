"""GEMM engine: an output-stationary int8 x int8 PE array with int32 accumulation, bias add and
per-output-channel requantization, bit-exact with :func:`vitforge.quant.ops.gemm`.

Blocks:

* :class:`Requantizer` — ``lanes`` lanes of :func:`vitforge.quant.fixed.requantize` to int8.
* :class:`GeluDrain` — ``lanes`` GELU lanes (:class:`~vitforge.hw.nonlinear.GeluUnit` in
  :class:`~vitforge.hw.nonlinear.ElementwiseLanes`) after the requantizer, or a wire
  (``HwConfig.fuse_gelu``, the ``GEMM`` instruction's ``gelu`` flag).
* :class:`GemmEngine` — the ``pe_rows x pe_cols`` PE array; computes one output tile
  ``C[pe_rows, pe_cols]`` from a stream of K steps; drains the tile through the requantizer (and,
  with ``fuse_gelu``, the GELU drain) while the next tile accumulates.
* :class:`GemmSequencer` — runs one ``GEMM`` instruction (:mod:`vitforge.hw.isa`): tiles M, N and
  K, reads the scratchpads into double-buffered operand blocks (the next block's reads overlap
  the current block's K steps; with B an activation, an operand cache, ``HwConfig.operand_cache_words``,
  lets one operand be read beside the other), feeds the engine, writes the int8 results back.

Arithmetic contract (what the tests check against quant/): ``acc = sum_k a*b`` in
``HwConfig.pe_acc_bits`` (exact for any K up to ``HwConfig.max_gemm_k``: the width of the
largest possible sum), ``acc + bias`` in 32 bits, then ``saturate(round_shift(acc * mult,
shift))`` to int8 with round half up. The reference refuses accumulators that overflow int32;
the hardware wraps them (two's complement), so programs must keep within int32 as the reference
requires, and within ``max_gemm_k`` steps per GEMM.
"""

from __future__ import annotations

from amaranth.hdl import C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from vitforge.quant.fixed import INT8, REQUANT_MAX_SHIFT
from vitforge.quant.selector import MEAN_RECIP_BITS

from .bus import flat, scratchpad_read, scratchpad_write
from .config import HwConfig
from .divider import Divider
from .isa import Op, op_layout
from .nonlinear import ElementwiseLanes, GeluUnit

#: Width of the product ``acc * mult`` (|acc| <= 2**31, mult < 2**16: fits 48 bits signed).
PRODUCT_BITS = 48

#: Offset of the high product in a packed multiplication (``HwConfig.dsp_packing``, AMD WP486):
#: ``((a_hi << PACK_SHIFT) + a_lo) * b = a_hi*b * 2**PACK_SHIFT + a_lo*b``, where the low product
#: (``|a_lo*b| <= 2**14``) fills bits ``0 .. PACK_SHIFT-1`` as a signed field. The packed operand
#: is 27 bits signed and ``b`` 8: one DSP48E2 multiplier (27 x 18 signed).
PACK_SHIFT = 18


def _check_config(config: object) -> HwConfig:
    if not isinstance(config, HwConfig):
        raise TypeError(f"config must be a HwConfig, not {type(config).__name__}")
    return config


def param_lane_layout(config: HwConfig) -> data.StructLayout:
    """One output channel's parameters: int32 bias, unsigned multiplier, shift."""
    return data.StructLayout({
        "bias": signed(config.acc_bits),
        "mult": unsigned(config.mult_bits),
        "shift": unsigned(config.shift_bits),
    })


def param_word_layout(config: HwConfig) -> data.ArrayLayout:
    """A parameter scratchpad word: ``lanes`` channels of :func:`param_lane_layout`."""
    return data.ArrayLayout(param_lane_layout(config), config.lanes)


def word_layout(config: HwConfig) -> data.ArrayLayout:
    """An activation/weight scratchpad word: ``lanes`` int8 elements."""
    return data.ArrayLayout(signed(config.act_bits), config.lanes)


def round_shift_saturate(m: Module, x, shift, lo: int, hi: int):
    """``saturate(round_shift(x, shift), [lo, hi])`` as a combinational value (round half up).

    ``round_shift(x, s) = floor(x / 2**s + 1/2) = (floor(2x / 2**s) + 1) >> 1``; valid for any
    ``s >= 0`` without a special case for ``s = 0``.
    """
    t = Signal(signed(len(x) + 1))
    y = Signal(signed(len(x) + 1))
    m.d.comb += [
        t.eq((x << 1) >> shift),
        y.eq((t + 1) >> 1),
    ]
    return Mux(y > hi, hi, Mux(y < lo, lo, y))


class Requantizer(wiring.Component):
    """``lanes`` lanes of ``saturate(round_shift(acc * mult, shift))`` to int8: quant.fixed.requantize.

    Ports:
        input: stream of ``{acc: lanes x int32, mult: lanes x uint16, shift: lanes x uint6, last}``.
        output: stream of ``{data: lanes x int8, last}``; ``last`` passes through.

    Latency :attr:`latency` cycles, one transfer per cycle; back-pressure stalls the pipeline.
    Shifts above ``REQUANT_MAX_SHIFT`` are outside the contract (the reference refuses them).
    """

    #: Cycles from an input transfer to its output being valid.
    latency = 2

    def __init__(self, *, lanes: int, acc_bits: int, mult_bits: int, shift_bits: int):
        for name, value in (("lanes", lanes), ("acc_bits", acc_bits), ("mult_bits", mult_bits),
                            ("shift_bits", shift_bits)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if acc_bits + mult_bits > PRODUCT_BITS:
            raise ValueError(f"acc_bits + mult_bits must be at most {PRODUCT_BITS}, not {acc_bits + mult_bits}")
        if (1 << shift_bits) - 1 < REQUANT_MAX_SHIFT:
            raise ValueError(f"shift_bits {shift_bits} cannot hold REQUANT_MAX_SHIFT={REQUANT_MAX_SHIFT}")
        self._lanes = lanes
        in_layout = data.StructLayout({
            "acc": data.ArrayLayout(signed(acc_bits), lanes),
            "mult": data.ArrayLayout(unsigned(mult_bits), lanes),
            "shift": data.ArrayLayout(unsigned(shift_bits), lanes),
            "last": 1,
        })
        out_layout = data.StructLayout({"data": data.ArrayLayout(signed(INT8.bits), lanes), "last": 1})
        super().__init__({"input": In(stream.Signature(in_layout)), "output": Out(stream.Signature(out_layout))})

    @property
    def lanes(self) -> int:
        return self._lanes

    def elaborate(self, platform):
        m = Module()
        lanes = self._lanes
        s1_valid, s2_valid = Signal(), Signal()
        s1_last = Signal()
        prod = [Signal(signed(PRODUCT_BITS), name=f"prod{j}") for j in range(lanes)]
        shift = [Signal(self.input.payload.shift[0].shape(), name=f"shift{j}") for j in range(lanes)]
        adv2 = ~s2_valid | self.output.ready
        adv1 = ~s1_valid | adv2
        m.d.comb += [self.input.ready.eq(adv1), self.output.valid.eq(s2_valid)]
        with m.If(adv1):
            m.d.sync += [s1_valid.eq(self.input.valid), s1_last.eq(self.input.payload.last)]
            for j in range(lanes):
                m.d.sync += [
                    prod[j].eq(self.input.payload.acc[j] * self.input.payload.mult[j]),
                    shift[j].eq(self.input.payload.shift[j]),
                ]
        with m.If(adv2):
            m.d.sync += [s2_valid.eq(s1_valid), self.output.payload.last.eq(s1_last)]
            for j in range(lanes):
                q = round_shift_saturate(m, prod[j], shift[j], INT8.qmin, INT8.qmax)
                m.d.sync += self.output.payload.data[j].eq(q)
        return m


class GeluDrain(wiring.Component):
    """The fused GELU of the drain path: ``int_gelu`` on every lane of a row, or the row unchanged.

    Args (keyword-only):
        config: the build; its ``numerics.gelu_in/gelu_out`` are the lanes' formats (the int8 codes
            in and out are read as them: the GEMM's output format is the GELU's input format).

    Ports:
        input: stream of ``{data: lanes x int8, last}`` (:func:`result_layout`), the requantizer's rows.
        output: the same rows, each lane through :class:`~vitforge.hw.nonlinear.GeluUnit` when
            ``enable``; ``last`` passes through.
        enable: the instruction's ``gelu`` flag; must not change while a row is inside.

    Latency: :attr:`latency` cycles with ``enable`` (``lanes`` GELU units in lock step, one row per
    cycle; back-pressure stalls them), none without (a combinational bypass). ``last`` travels
    beside the lanes in a FIFO one deeper than the pipeline, so it never throttles it.
    """

    #: Cycles from an input row to its GELU row being valid (``enable`` high).
    latency = ElementwiseLanes.latency

    def __init__(self, *, config: HwConfig):
        self._config = _check_config(config)
        super().__init__({
            "input": In(stream.Signature(result_layout(config))),
            "output": Out(stream.Signature(result_layout(config))),
            "enable": In(1),
        })

    @property
    def config(self) -> HwConfig:
        return self._config

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        m.submodules.lanes = gelu = ElementwiseLanes(make=lambda: GeluUnit(numerics=cfg.numerics), lanes=cfg.lanes)
        m.submodules.last_fifo = last = SyncFIFO(width=1, depth=self.latency + 1)
        inp, out, en = self.input, self.output, self.enable
        m.d.comb += [
            gelu.i.valid.eq(inp.valid & en & last.w_rdy),
            gelu.i.payload.eq(inp.payload.data),
            last.w_data.eq(inp.payload.last),
            last.w_en.eq(gelu.i.valid & gelu.i.ready),
            gelu.o.ready.eq(out.ready & en),
            last.r_en.eq(gelu.o.valid & gelu.o.ready),
            inp.ready.eq(Mux(en, gelu.i.ready & last.w_rdy, out.ready)),
            out.valid.eq(Mux(en, gelu.o.valid, inp.valid)),
            out.payload.data.eq(Mux(en, gelu.o.payload, inp.payload.data)),
            out.payload.last.eq(Mux(en, last.r_data, inp.payload.last)),
        ]
        return m


def operand_layout(config: HwConfig) -> data.StructLayout:
    """One K step: a column of A (``pe_rows`` int8), a row of B (``pe_cols`` int8), ``last`` of the tile."""
    return data.StructLayout({
        "a": data.ArrayLayout(signed(config.act_bits), config.pe_rows),
        "b": data.ArrayLayout(signed(config.weight_bits), config.pe_cols),
        "last": 1,
    })


def result_layout(config: HwConfig) -> data.StructLayout:
    """One output row of a tile: ``pe_cols`` int8, ``last`` on the tile's last row."""
    return data.StructLayout({"data": data.ArrayLayout(signed(INT8.bits), config.pe_cols), "last": 1})


def packed_pair(m: Module, a_hi, a_lo, b: list, *, name: str) -> tuple[list, list]:
    """``a_hi * b[j]`` and ``a_lo * b[j]`` for every ``j``, one multiplication each (AMD WP486).

    ``P = ((a_hi << PACK_SHIFT) + a_lo) * b[j]`` (the packed operand is built once, for all ``j``).
    The low field ``P[:PACK_SHIFT]``, read as signed, is ``a_lo * b[j]``; the high field
    ``P[PACK_SHIFT:]`` is ``a_hi * b[j]`` less the low product's sign borrow, so the low field's
    sign bit ``P[PACK_SHIFT - 1]`` must be added back. Valid for int8 operands (``|a_lo * b| <=
    2**14 < 2**(PACK_SHIFT - 1)``).

    Returns ``(hi, lo)``, one entry per ``b[j]``: ``hi[j] = (field, borrow)`` with ``a_hi * b[j] =
    field + borrow`` (the accumulator adds the borrow as its carry-in: :func:`add_carry`), and
    ``lo[j] = (a_lo * b[j], None)``.
    """
    packed = Signal(signed(PACK_SHIFT + len(a_hi) + 1), name=f"packed_{name}")
    m.d.comb += packed.eq((a_hi << PACK_SHIFT) + a_lo)
    hi, lo = [], []
    for j, bj in enumerate(b):
        p = Signal(signed(len(packed) + len(bj)), name=f"pprod_{name}_{j}")
        m.d.comb += p.eq(packed * bj)
        lo.append((p[:PACK_SHIFT].as_signed(), None))
        hi.append((p[PACK_SHIFT:].as_signed(), p[PACK_SHIFT - 1]))
    return hi, lo


def add_carry(x, y, carry):
    """``x + y + carry`` (``carry`` one bit) as one adder with ``carry`` in its carry chain.

    ``(2x + carry) + (2y + 1) = 2 (x + y + carry) + 1 - carry``, so bits ``1..`` of that sum are
    ``x + y + carry``. Written as ``x + y + carry``, Yosys builds two adders (33 more LUTs per
    packed product on a 4x8 array: README, "Issue #13, item 3").
    """
    return (Cat(carry, x).as_signed() + Cat(C(1, 1), y).as_signed())[1:].as_signed()


def pe_products(m: Module, config: HwConfig, a, b) -> list[list]:
    """The ``pe_rows x pe_cols`` products ``a[i] * b[j]`` of one K step as ``(value, carry)``.

    ``a[i] * b[j] = value + carry``; ``carry`` is ``None`` (plain multiplications) or, with
    ``config.dsp_packing``, the borrow bit of :func:`packed_pair` for the even rows of each pair
    of rows ``2p``, ``2p + 1`` (an odd last row multiplies alone).
    """
    rows, cols = config.pe_rows, config.pe_cols
    prods = [[(a[i] * b[j], None) for j in range(cols)] for i in range(rows)]
    if config.dsp_packing:
        bs = [b[j] for j in range(cols)]
        for p in range(rows // 2):
            prods[2 * p], prods[2 * p + 1] = packed_pair(m, a[2 * p], a[2 * p + 1], bs, name=str(p))
    return prods


class GemmEngine(wiring.Component):
    """Output-stationary PE array: ``C[i, j] = requant(sum_k a[i]_k * b[j]_k + bias[j])``.

    Ports:
        operands: stream of K steps ``{a: pe_rows x int8, b: pe_cols x int8, last}``; a tile is
            the steps up to and including one with ``last`` (K in 1..``config.max_gemm_k``; longer
            sums may wrap at ``config.pe_acc_bits``).
        params: stream of ``pe_cols`` channels ``{bias: int32, mult: uint16, shift: uint6}``
            (:func:`param_word_layout`), one transfer per tile, taken when the tile's
            accumulation ends.
        result: stream of the tile's ``pe_rows`` output rows ``{data: pe_cols x int8, last}``,
            row 0 first, ``last`` on the final row.
        gelu: (only with ``config.fuse_gelu``) the rows go through :class:`GeluDrain`; held for the
            whole instruction.

    With ``config.dsp_packing``, rows ``2p`` and ``2p + 1`` share each multiplication
    (:func:`pe_products`); the results are the same bit for bit.

    Throughput: one K step per cycle; one bubble per tile; the ``pe_rows``-cycle drain of a
    tile overlaps the next tile's accumulation (K >= pe_rows keeps the array busy).
    Latency: :attr:`latency` cycles from the transfer of a tile's ``last`` step to its first
    result row being valid, given params are valid and the previous drain is done; with ``gelu``
    :attr:`GeluDrain.latency` more (the drain registers free as before: tiles keep their pace).
    """

    def __init__(self, *, config: HwConfig):
        self._config = _check_config(config)
        ports = {
            "operands": In(stream.Signature(operand_layout(config))),
            "params": In(stream.Signature(param_word_layout(config))),
            "result": Out(stream.Signature(result_layout(config))),
        }
        if config.fuse_gelu:
            ports["gelu"] = In(1)
        super().__init__(ports)

    @property
    def config(self) -> HwConfig:
        return self._config

    #: Last operand accepted -> first result valid: finish the tile, load the drain, requantize.
    latency = 2 + Requantizer.latency

    def elaborate(self, platform):
        cfg = self._config
        rows, cols = cfg.pe_rows, cfg.pe_cols
        m = Module()
        m.submodules.requant = rq = Requantizer(lanes=cols, acc_bits=cfg.acc_bits, mult_bits=cfg.mult_bits,
                                                shift_bits=cfg.shift_bits)
        if cfg.fuse_gelu:
            m.submodules.gelu_lanes = gd = GeluDrain(config=cfg)
            m.d.comb += gd.enable.eq(self.gelu)
            wiring.connect(m, rq.output, gd.input)
            wiring.connect(m, gd.output, wiring.flipped(self.result))
        else:
            wiring.connect(m, rq.output, wiring.flipped(self.result))

        # Accumulators and drain registers are pe_acc_bits wide (exact up to max_gemm_k steps).
        acc = [[Signal(signed(cfg.pe_acc_bits), name=f"acc_{i}_{j}") for j in range(cols)] for i in range(rows)]
        drain = [[Signal(signed(cfg.pe_acc_bits), name=f"drain_{i}_{j}") for j in range(cols)] for i in range(rows)]
        # The bias joins each row as it leaves the drain (one adder per column, not per PE).
        bias = [Signal(signed(cfg.acc_bits), name=f"bias_{j}") for j in range(cols)]
        first = Signal(init=1)  # the next operand starts a tile
        pending = Signal()  # a finished tile waits for the drain registers
        drain_left = Signal(range(rows + 1))
        ops, prm = self.operands, self.params

        # Accumulate.
        prods = pe_products(m, cfg, ops.payload.a, ops.payload.b)
        m.d.comb += ops.ready.eq(~pending)
        with m.If(ops.valid & ops.ready):
            for i in range(rows):
                for j in range(cols):
                    # prod + (0 or acc): the select folds into the adder's LUTs (one LUT per bit; selecting
                    # after the adder took two).
                    prod, carry = prods[i][j]
                    prev = Mux(first, C(0, signed(cfg.pe_acc_bits)), acc[i][j])
                    m.d.sync += acc[i][j].eq(prod + prev if carry is None else add_carry(prev, prod, carry))
            m.d.sync += [first.eq(ops.payload.last), pending.eq(ops.payload.last)]

        # Move a finished tile into the drain registers and its bias into the bias registers.
        with m.If(pending & (drain_left == 0) & prm.valid):
            m.d.comb += prm.ready.eq(1)
            m.d.sync += [pending.eq(0), drain_left.eq(rows)]
            for j in range(cols):
                m.d.sync += [rq.input.payload.mult[j].eq(prm.payload[j].mult),
                             rq.input.payload.shift[j].eq(prm.payload[j].shift), bias[j].eq(prm.payload[j].bias)]
                for i in range(rows):
                    m.d.sync += drain[i][j].eq(acc[i][j])

        # Drain row 0 into the requantizer, shift the rest up.
        m.d.comb += [rq.input.valid.eq(drain_left != 0), rq.input.payload.last.eq(drain_left == 1)]
        for j in range(cols):
            m.d.comb += rq.input.payload.acc[j].eq(drain[0][j] + bias[j])  # sign-extended; wraps to 32 bits
        with m.If(rq.input.valid & rq.input.ready):
            m.d.sync += drain_left.eq(drain_left - 1)
            for i in range(rows - 1):
                for j in range(cols):
                    m.d.sync += drain[i][j].eq(drain[i + 1][j])
        return m


class GemmSequencer(wiring.Component):
    """Runs one ``GEMM`` instruction on a :class:`GemmEngine` from the scratchpads.

    Ports:
        start: pulse with ``instr`` (the GEMM fields of :func:`vitforge.hw.isa.op_layout`) valid.
        busy: high from the cycle after ``start`` until the last result is written.
        act_raddr / act_rdata: activation scratchpad read port (synchronous, one cycle).
        wt_raddr / wt_rdata: weight scratchpad read port.
        prm_raddr / prm_rdata: parameter scratchpad read port.
        act_waddr / act_wdata / act_we: activation scratchpad write port (results).

    Schedule: the output tiles (``mt`` over M in ``pe_rows``, ``nt`` over N in ``lanes``) and, in
    each, the K blocks of ``lanes`` steps, form one sequence of operand blocks. A block is
    ``pe_rows`` A words and ``lanes`` B words. Operands are double-buffered: a reader fills a
    shadow buffer with the next block (:func:`reads_per_block` cycles: A on the activation port
    and B on the weight port at once, or one after the other when ``b_act``; with an operand cache,
    ``HwConfig.operand_cache_words``, a ``b_act`` instruction writes its first M tile's B words and
    each M tile's first-N-tile A words into the cache's two halves as they arrive; when B fitted, the
    later M tiles read B from the cache beside A, else, when A fitted, an M tile's later N tiles
    read A from it beside B: :func:`~vitforge.hw.timing.cached_operand`) while the live buffer
    streams the current block to the engine, one K step per cycle; the reader starts a block in
    the cycle before the shadow is handed over. Blocks reach the engine back to back when a block
    has at least as many K steps as read cycles; the engine's one bubble per tile and its drain
    (``pe_rows`` cycles a tile) are the other losses. :func:`vitforge.hw.timing.gemm_cycles`
    counts the cycles. Results are written while the next tile computes; rows past M are not
    written. Sources and destination must not overlap. M, K or N of 0 finishes at once. With
    ``mean`` set, the reciprocal ``floor(2**MEAN_RECIP_BITS / k)`` (a
    :class:`~vitforge.hw.divider.Divider`) is computed first (``MEAN_RECIP_BITS + 3`` cycles) and
    replaces every channel's parameters (``bias = 0``, ``shift = MEAN_RECIP_BITS``).
    """

    def __init__(self, *, config: HwConfig):
        self._config = cfg = _check_config(config)
        word = word_layout(cfg)
        super().__init__({
            "start": In(1),
            "instr": In(op_layout(Op.GEMM, cfg)),
            "busy": Out(1),
            **flat("act", scratchpad_read(cfg.addr_bits(cfg.act_depth), word)),
            **flat("wt", scratchpad_read(cfg.addr_bits(cfg.weight_depth), word)),
            **flat("prm", scratchpad_read(cfg.addr_bits(cfg.param_depth), param_word_layout(cfg))),
            **flat("act", scratchpad_write(cfg.addr_bits(cfg.act_depth), word)),
        })

    @property
    def config(self) -> HwConfig:
        return self._config

    def elaborate(self, platform):
        cfg = self._config
        rows, lanes = cfg.pe_rows, cfg.lanes
        m = Module()
        m.submodules.engine = eng = GemmEngine(config=cfg)
        m.submodules.recip_div = div = Divider(dividend_width=MEAN_RECIP_BITS + 1,
                                               divisor_width=len(self.instr.k))
        assert MEAN_RECIP_BITS < cfg.mult_bits, "a count of 1 needs mult = 2**MEAN_RECIP_BITS"

        ins = Signal.like(self.instr)
        if cfg.fuse_gelu:
            m.d.comb += eng.gelu.eq(ins.gelu)
        recip = Signal(cfg.mult_bits)
        m.d.comb += [div.i.payload.dividend.eq(1 << MEAN_RECIP_BITS), div.i.payload.divisor.eq(ins.k),
                     div.o.ready.eq(1)]
        with m.If(div.o.valid):
            m.d.sync += recip.eq(div.o.payload.quotient)
        dim = ins.m.shape()
        addr = unsigned(32)
        bits = cfg.act_bits
        n_mt, n_nt, n_kb = Signal(dim), Signal(dim), Signal(dim)  # tile counts
        wb_done = Signal()
        running = Signal()  # RUN or DRAIN: the reader, the stepper and the parameter loader work
        b_row_step = ins.b_stride * lanes  # words between B rows k and k + lanes (or n and n + lanes)

        def ceil_div(x, d):
            if d & (d - 1):
                return (x + (d - 1)) // d
            return (x + (d - 1)) >> (d.bit_length() - 1)

        # --- operand buffers ----------------------------------------------------------------
        # Shadow: two word chains the reader shifts captured words into (no select per word).
        # Live: what the engine steps through; loaded from the shadow in one cycle (the swap).
        a_sh = [Signal(cfg.word_bits, name=f"a_sh{i}") for i in range(rows)]
        b_sh = [Signal(cfg.word_bits, name=f"b_sh{r}") for r in range(lanes)]
        a_live = [Signal(cfg.word_bits, name=f"a_live{i}") for i in range(rows)]
        b_live = [Signal(cfg.word_bits, name=f"b_live{r}") for r in range(lanes)]
        occ = Signal(range(3))  # blocks whose reads began and that are not yet swapped in
        full = Signal()  # the shadow holds a whole block
        live_valid = Signal()
        step = Signal(range(lanes + 1))
        steps = Signal(range(lanes + 1))  # K steps of the live block
        live_tile_last = Signal()  # the live block ends its tile
        live_final = Signal()  # the live block is the instruction's last
        done = Signal()  # the last K step went to the engine
        ops = eng.operands
        xfer = ops.valid & ops.ready
        last_step = step + 1 == steps
        swap = Signal()
        m.d.comb += swap.eq(running & full & (~live_valid | (xfer & last_step)))

        # --- operand cache (HwConfig.operand_cache_words), for b_act: its lower half keeps the first M tile's B
        # words, its upper half the current M tile's A words (written at nt = 0), in the order they are read.
        # A later M tile reads B from it when all of B fitted; a later N tile of an M tile whose B comes from
        # the activation port reads A from it when that tile's A fitted. Either way one operand comes from
        # the cache beside the other on the activation port.
        depth = cfg.operand_cache_words
        half = depth // 2
        b_cached = a_cached = C(0)  # the block being read takes B / A from the cache
        if depth:
            m.submodules.operand_cache = cache = Memory(shape=unsigned(cfg.word_bits), depth=depth, init=[])
            c_rd, c_wr = cache.read_port(), cache.write_port()
            b_cnt, a_cnt = Signal(range(half + 1)), Signal(range(half + 1))  # words written (saturate at half)
            b_over, a_over = Signal(), Signal()  # B (A of an M tile) has more words than half the cache
            b_rp, a_rp = Signal(range(half)), Signal(range(half))  # the next B / A word to read from the cache
            c_wa = Signal(range(depth))
            cap_w, cap_bc, cap_ac = Signal(), Signal(), Signal()  # act word to the cache; cache word to B / A
            b_cached, a_cached = Signal(), Signal()

        # --- reader: walks the blocks (mt, nt, kb) one block ahead of the stepper -----------------
        reads = Signal(range(rows + lanes + 1))  # read cycles per block: reads_per_block()
        r_i = Signal(range(rows + lanes + 1))  # read cycle within the block
        r_more = Signal()  # blocks left to read
        r_kb, r_nt, r_mt = Signal(dim), Signal(dim), Signal(dim)
        a_tile = Signal(addr)  # a_addr + mt * rows * a_stride
        b_tile = Signal(addr)  # first B word of the tile: b_addr + nt (or + nt * lanes * b_stride if b_trans)
        a_ptr, b_ptr = Signal(addr), Signal(addr)  # the A and B words read this cycle
        a_blk, b_blk = Signal(addr), Signal(addr)  # first A and B words of this block
        a_issue = r_i < rows
        both_act = ins.b_act & ~b_cached & ~a_cached  # B on the activation port, after A
        b_issue = Mux(both_act, (r_i >= rows) & (r_i < rows + lanes), r_i < lanes)
        if depth:
            m.d.comb += [b_cached.eq(ins.b_act & (r_mt != 0) & ~b_over),
                         a_cached.eq(ins.b_act & (r_nt != 0) & ~a_over & ~b_cached),
                         reads.eq(Mux(both_act, rows + lanes, max(rows, lanes)))]
        # The block's first read may go out when its first word lands after the swap of the block
        # before it: the swap is now, or certain next cycle.
        cap_a, cap_b, cap_last = Signal(), Signal(), Signal()
        full_next = full | cap_last
        live_empty_next = ~live_valid | (xfer & last_step)
        last_step_next = xfer & (step + 2 == steps)
        start_ok = (occ == 0) | ((occ == 1) & (swap | (full_next & (live_empty_next | last_step_next))))
        issuing = Signal()
        m.d.comb += issuing.eq(running & r_more & ((r_i != 0) | start_ok))
        m.d.comb += [self.act_raddr.eq(Mux(a_issue & ~a_cached, a_ptr, b_ptr)), self.wt_raddr.eq(b_ptr)]
        m.d.sync += [cap_a.eq(issuing & a_issue), cap_b.eq(issuing & b_issue),
                     cap_last.eq(issuing & (r_i + 1 == reads))]
        if depth:
            b_fill = issuing & b_issue & ins.b_act & (r_mt == 0) & ~b_cached  # a B word of the first M tile
            a_fill = issuing & a_issue & ins.b_act & (r_nt == 0)  # an A word of an M tile's first N tile
            m.d.sync += [cap_w.eq((b_fill & (b_cnt != half)) | (a_fill & (a_cnt != half))),
                         c_wa.eq(Mux(a_fill, half + a_cnt, b_cnt)),
                         cap_bc.eq(issuing & b_issue & b_cached), cap_ac.eq(issuing & a_issue & a_cached)]
            m.d.comb += [c_rd.addr.eq(Mux(a_cached, half + a_rp, b_rp)), c_wr.addr.eq(c_wa),
                         c_wr.data.eq(self.act_rdata), c_wr.en.eq(cap_w)]
            for fill, cnt, over in ((b_fill, b_cnt, b_over), (a_fill, a_cnt, a_over)):
                with m.If(fill):
                    with m.If(cnt != half):
                        m.d.sync += cnt.eq(cnt + 1)
                    with m.Else():
                        m.d.sync += over.eq(1)
        with m.If(issuing):
            m.d.sync += r_i.eq(r_i + 1)
            with m.If(a_issue):
                m.d.sync += a_ptr.eq(a_ptr + ins.a_stride)
                if depth:
                    with m.If(a_cached):
                        m.d.sync += a_rp.eq(a_rp + 1)
            with m.If(b_issue):
                m.d.sync += b_ptr.eq(b_ptr + ins.b_stride)
                if depth:
                    with m.If(b_cached):
                        m.d.sync += b_rp.eq(b_rp + 1)
            with m.If(r_i + 1 == reads):  # next block
                m.d.sync += r_i.eq(0)
                with m.If(r_kb + 1 < n_kb):
                    nb = Mux(ins.b_trans, b_blk + 1, b_blk + b_row_step)
                    m.d.sync += [r_kb.eq(r_kb + 1), a_blk.eq(a_blk + 1), a_ptr.eq(a_blk + 1),
                                 b_blk.eq(nb), b_ptr.eq(nb)]
                with m.Elif(r_nt + 1 < n_nt):
                    nb = Mux(ins.b_trans, b_tile + b_row_step, b_tile + 1)
                    m.d.sync += [r_kb.eq(0), r_nt.eq(r_nt + 1), a_blk.eq(a_tile), a_ptr.eq(a_tile),
                                 b_tile.eq(nb), b_blk.eq(nb), b_ptr.eq(nb)]
                    if depth:
                        m.d.sync += a_rp.eq(0)  # each N tile reads its M tile's A from the first word
                with m.Elif(r_mt + 1 < n_mt):
                    na = a_tile + ins.a_stride * rows
                    m.d.sync += [r_kb.eq(0), r_nt.eq(0), r_mt.eq(r_mt + 1), a_tile.eq(na), a_blk.eq(na),
                                 a_ptr.eq(na), b_tile.eq(ins.b_addr), b_blk.eq(ins.b_addr), b_ptr.eq(ins.b_addr)]
                    if depth:  # each M tile reads B from the first word, and writes its own A
                        m.d.sync += [b_rp.eq(0), a_rp.eq(0), a_cnt.eq(0)]
                with m.Else():
                    m.d.sync += r_more.eq(0)
        b_rdata = Mux(ins.b_act, self.act_rdata.as_value(), self.wt_rdata.as_value())
        a_rdata = self.act_rdata.as_value()
        if depth:
            b_rdata = Mux(cap_bc, c_rd.data, b_rdata)
            a_rdata = Mux(cap_ac, c_rd.data, a_rdata)
        with m.If(cap_a):
            for i in range(rows):
                m.d.sync += a_sh[i].eq(a_sh[i + 1] if i + 1 < rows else a_rdata)
        with m.If(cap_b):
            for r in range(lanes):
                m.d.sync += b_sh[r].eq(b_sh[r + 1] if r + 1 < lanes else b_rdata)
        m.d.sync += occ.eq(occ + (issuing & (r_i == 0)) - swap)
        with m.If(swap):
            m.d.sync += full.eq(0)
        with m.If(cap_last):
            m.d.sync += full.eq(1)

        # --- stepper: the live block to the engine, one K step per cycle ------------------------
        s_kb, s_nt, s_mt = Signal(dim), Signal(dim), Signal(dim)  # the block the next swap brings
        s_k_left = Signal(dim)  # K steps from that block on in its tile
        for i in range(rows):
            m.d.comb += ops.payload.a[i].eq(a_live[i][:bits].as_signed())
        for j in range(lanes):
            m.d.comb += ops.payload.b[j].eq(Mux(ins.b_trans, b_live[j][:bits], b_live[0][j * bits:(j + 1) * bits]))
        m.d.comb += [ops.valid.eq(live_valid), ops.payload.last.eq(live_tile_last & last_step)]
        with m.If(xfer):
            m.d.sync += step.eq(step + 1)
            for i in range(rows):
                m.d.sync += a_live[i].eq(a_live[i] >> bits)
            for r in range(lanes):
                shifted = b_live[r + 1] if r + 1 < lanes else b_live[r]
                m.d.sync += b_live[r].eq(Mux(ins.b_trans, b_live[r] >> bits, shifted))
            with m.If(last_step):
                m.d.sync += live_valid.eq(0)
                with m.If(live_final):
                    m.d.sync += done.eq(1)
        with m.If(swap):
            tile_last = s_kb + 1 == n_kb
            m.d.sync += [live_valid.eq(1), step.eq(0), steps.eq(Mux(s_k_left > lanes, lanes, s_k_left)),
                         live_tile_last.eq(tile_last),
                         live_final.eq(tile_last & (s_nt + 1 == n_nt) & (s_mt + 1 == n_mt))]
            m.d.sync += [a_live[i].eq(a_sh[i]) for i in range(rows)]
            m.d.sync += [b_live[r].eq(b_sh[r]) for r in range(lanes)]
            with m.If(~tile_last):
                m.d.sync += [s_kb.eq(s_kb + 1), s_k_left.eq(s_k_left - lanes)]
            with m.Else():
                m.d.sync += [s_kb.eq(0), s_k_left.eq(ins.k)]
                with m.If(s_nt + 1 < n_nt):
                    m.d.sync += s_nt.eq(s_nt + 1)
                with m.Else():
                    m.d.sync += [s_nt.eq(0), s_mt.eq(s_mt + 1)]

        # --- parameters: one word per tile, loaded when the engine took the previous tile's -------
        p_nt, p_mt = Signal(dim), Signal(dim)
        p_more = Signal()  # tiles whose parameters are still to load
        p_fresh = Signal()  # the read port shows p_nt's word
        prm_valid = Signal()
        prm_word = Signal(param_word_layout(cfg))
        m.d.comb += [self.prm_raddr.eq(ins.param_addr + p_nt),
                     eng.params.valid.eq(prm_valid), eng.params.payload.eq(prm_word)]
        m.d.sync += p_fresh.eq(1)
        with m.If(eng.params.valid & eng.params.ready):
            m.d.sync += prm_valid.eq(0)
        with m.If(running & p_more & p_fresh & ~prm_valid):
            m.d.sync += [prm_word.eq(self.prm_rdata), prm_valid.eq(1), p_fresh.eq(0)]
            with m.If(ins.mean):
                for j in range(lanes):
                    m.d.sync += [prm_word[j].bias.eq(0), prm_word[j].mult.eq(recip),
                                 prm_word[j].shift.eq(MEAN_RECIP_BITS)]
            with m.If(p_nt + 1 < n_nt):
                m.d.sync += p_nt.eq(p_nt + 1)
            with m.Elif(p_mt + 1 < n_mt):
                m.d.sync += [p_nt.eq(0), p_mt.eq(p_mt + 1)]
            with m.Else():
                m.d.sync += [p_nt.eq(0), p_more.eq(0)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [
                        ins.eq(self.instr),
                        n_mt.eq(ceil_div(self.instr.m, rows)),
                        n_nt.eq(ceil_div(self.instr.n, lanes)),
                        n_kb.eq(ceil_div(self.instr.k, lanes)),
                        r_i.eq(0), r_more.eq(1), r_kb.eq(0), r_nt.eq(0), r_mt.eq(0),
                        a_tile.eq(self.instr.a_addr), a_blk.eq(self.instr.a_addr), a_ptr.eq(self.instr.a_addr),
                        b_tile.eq(self.instr.b_addr), b_blk.eq(self.instr.b_addr), b_ptr.eq(self.instr.b_addr),
                        occ.eq(0), full.eq(0), live_valid.eq(0), done.eq(0),
                        s_kb.eq(0), s_nt.eq(0), s_mt.eq(0), s_k_left.eq(self.instr.k),
                        p_nt.eq(0), p_mt.eq(0), p_more.eq(1), p_fresh.eq(0),
                    ]
                    if depth:
                        m.d.sync += [b_cnt.eq(0), a_cnt.eq(0), b_over.eq(0), a_over.eq(0), b_rp.eq(0), a_rp.eq(0)]
                    else:
                        m.d.sync += reads.eq(Mux(self.instr.b_act, rows + lanes, max(rows, lanes)))
                    with m.If((self.instr.m != 0) & (self.instr.n != 0) & (self.instr.k != 0)):
                        m.next = "RUN"
                        m.d.sync += running.eq(1)
                        with m.If(self.instr.mean):
                            m.next = "RECIP"
                            m.d.sync += running.eq(0)
            with m.State("RECIP"):  # mean: floor(2**MEAN_RECIP_BITS / k) as every channel's multiplier
                m.d.comb += [self.busy.eq(1), div.i.valid.eq(1)]
                with m.If(div.i.ready):
                    m.next = "RECIP_WAIT"
            with m.State("RECIP_WAIT"):
                m.d.comb += self.busy.eq(1)
                with m.If(div.o.valid):
                    m.d.sync += running.eq(1)
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += self.busy.eq(1)
                with m.If(done):
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += self.busy.eq(1)
                with m.If(wb_done):
                    m.d.sync += running.eq(0)
                    m.next = "IDLE"

        # Write-back: results arrive in tile order (mt, nt), rows 0..pe_rows-1.
        wb_nt = Signal(dim)
        wb_row = Signal(range(rows))
        wb_m = Signal(dim.width + 1)  # output row index: wb_mt * rows + wb_row
        wb_m_tile = Signal(dim.width + 1)  # wb_mt * rows
        wb_row_addr = Signal(addr)  # dst_addr + wb_m * dst_stride
        wb_tile_addr = Signal(addr)  # dst_addr + wb_m_tile * dst_stride
        res = eng.result
        m.d.comb += [res.ready.eq(1),
                     self.act_waddr.eq(wb_row_addr + wb_nt),
                     self.act_wdata.eq(res.payload.data),
                     self.act_we.eq(res.valid & (wb_m < ins.m))]
        with m.If(self.start):
            m.d.sync += [wb_nt.eq(0), wb_row.eq(0), wb_m.eq(0), wb_m_tile.eq(0), wb_done.eq(0),
                         wb_row_addr.eq(self.instr.dst_addr), wb_tile_addr.eq(self.instr.dst_addr)]
        with m.Elif(res.valid):
            with m.If(~res.payload.last):
                m.d.sync += [wb_row.eq(wb_row + 1), wb_m.eq(wb_m + 1), wb_row_addr.eq(wb_row_addr + ins.dst_stride)]
            with m.Elif(wb_nt + 1 < n_nt):
                m.d.sync += [wb_row.eq(0), wb_nt.eq(wb_nt + 1), wb_m.eq(wb_m_tile), wb_row_addr.eq(wb_tile_addr)]
            with m.Else():
                next_tile = wb_tile_addr + ins.dst_stride * rows
                m.d.sync += [wb_row.eq(0), wb_nt.eq(0), wb_m.eq(wb_m_tile + rows), wb_m_tile.eq(wb_m_tile + rows),
                             wb_tile_addr.eq(next_tile), wb_row_addr.eq(next_tile)]
                with m.If(wb_m_tile + rows >= ins.m):
                    m.d.sync += wb_done.eq(1)
        return m
