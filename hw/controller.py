"""Controller: fetches :mod:`vitforge.hw.isa` instructions and runs them on the datapath units.

:class:`Controller` owns the GEMM sequencer (with its engine), the residual adder, the nonlinear
units and the token selector that :class:`~vitforge.hw.config.HwConfig` enables, and drives the
scratchpad ports that :class:`~vitforge.hw.top.EncoderTop` connects to its memories.

Execution: one instruction at a time, in order, beside the loader: a ``LOAD`` with ``nowait``
into the weight or parameter scratchpad is handed to it (it writes the words through the
memory's write port, which nothing else uses while the controller runs) and the next instruction
is fetched at once; ``SYNC`` waits for it (:mod:`vitforge.hw.isa` has the rules). ``END`` waits for
the loader, stops the controller and raises ``done``; an opcode whose unit is not built (or
unknown) stops it with ``error`` raised as well. ``cycles`` counts the cycles from ``start`` to the
cycle ``done`` rises.

Loader: one ``LOAD`` in progress (``ld_left`` words to go, one taken per cycle that ``dma_in`` is
valid) and a queue of ``load_queue`` more. A ``LOAD`` dispatched with the loader idle starts in the
next cycle; a queued one starts in the cycle after the last word of the one before it (two cycles
after its dispatch at the earliest). A waiting ``LOAD``, ``SYNC`` or ``END`` goes on in the cycle
after the loader's count allows it.

Dynamic token count (the selector's output is data dependent):

* ``tokens`` is a register, set by every ``SELECT`` to the number of rows it wrote (kept tokens
  plus the package token, if any).
* A size field (``m``, ``k``, ``n``, ``rows``, ``cols``, ``n_tokens``) holding
  :data:`~vitforge.hw.isa.TOKENS` reads the register instead.
* An ``ADD``/``LOAD``/``STORE`` ``count`` with bit :data:`~vitforge.hw.isa.PER_TOKEN` set counts
  ``count & (PER_TOKEN - 1)`` words per token (``tokens`` times that).

Unit contracts (how the row-wise instructions use the parameter scratchpad):

* ``LAYERNORM``: at ``param_addr``, ``row_words(cols)`` words with, per channel lane,
  ``bias = beta`` (int32) and ``mult`` = gamma as int8 two's complement in its low 8 bits;
  the next word holds, in lane 0, ``bias = eps_q``, ``mult``, ``shift`` (per-tensor).
* ``SELECT``: the row of token ``t`` at ``scores_addr + 2 t`` is two words: lane ``i`` of the
  first holds head ``i``'s keep score (Q0.7), lane ``i`` of the second its head weight
  (Q0.8); heads ``>= max_heads`` are not read (needs ``max_heads <= lanes``). The threshold is
  lane 0's ``bias`` of the word at ``param_addr``. Output rows go to ``dst_addr`` with row stride
  ``tokens_stride``.
* ``SOFTMAX``/``GELU``/``SIGMOID``: ``param_addr`` is unused. Padding lanes of every written
  row are 0.

Throughput: at ``unit_lanes = 1`` row-wise instructions stream one element per cycle with two
bubble cycles per word read; at ``unit_lanes = U > 1`` the row streamer reads one word per cycle
(pipelined, two words of look-ahead) and hands GELU, sigmoid, softmax and LayerNorm ``U`` elements per
cycle (LayerNorm's ``U`` parameter lanes likewise), the writer packs ``U`` results per cycle. ``SELECT``
keeps its reader (score words, then the token's words, two bubbles per word) and at ``U > 1`` hands the
compactor ``U`` elements per transfer, its output written ``U`` a cycle. ``ADD`` takes four cycles per
word; at ``U > 1`` two (read a, read b; the add and the write overlap the next word's reads, so a
``dst_addr`` of ``a_addr + 1`` or ``b_addr + 1`` would read a word before it is written; ``dst`` equal
to ``a`` or ``b``, or apart from both, is exact). ``LOAD``/``STORE`` one word per cycle.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from . import units
from .bus import flat, scratchpad_read, scratchpad_write
from .config import HwConfig
from .gemm import param_lane_layout
from .isa import INSTR_BITS, MAX_ADDR_BITS, PER_TOKEN, TOKENS, Mem, Op, instr_layout
from .selector import SCORE_BITS

#: Width of the cycle counter.
CYCLE_BITS = 32


def scratchpads(cfg: HwConfig) -> tuple[tuple[str, int, int], ...]:
    """The three scratchpads as ``(port prefix, depth in words, word width)``: activations, weights, parameters."""
    return (("act", cfg.act_depth, cfg.word_bits), ("wt", cfg.weight_depth, cfg.word_bits),
            ("prm", cfg.param_depth, cfg.param_word_bits))


def _ceil_div(x, d: int):
    if d & (d - 1):
        return (x + (d - 1)) // d
    return (x + (d - 1)) >> (d.bit_length() - 1)


def _beat_reader(m: Module, name: str, *, run, raddr, rdata, base, stride, rows, cols, row_words, lanes: int,
                 unit_lanes: int, elem_bits: int, ready):
    """A pipelined reader of ``rows`` rows of ``cols`` elements (``row_words`` words each, row ``r`` at
    ``base + r * stride``) handing out ``unit_lanes`` elements per transfer (``unit_lanes`` divides
    ``lanes``; a row's last transfer may reach past ``cols``).

    One read per cycle into a two-word queue (a read is issued when the queue, counting the word in
    flight and the one leaving, has room), so the transfers follow each other without bubbles; a
    word's first transfer is valid two cycles after its read. Everything restarts while ``run`` is low.
    Returns ``(valid, payload)``; a transfer happens when ``valid & ready``.
    """
    per_word = lanes // unit_lanes
    q_row, q_word = Signal(range(TOKENS + 1), name=f"{name}_q_row"), Signal(range(TOKENS + 1), name=f"{name}_q_word")
    q_off = Signal(unsigned(MAX_ADDR_BITS + 1), name=f"{name}_q_off")
    pend = Signal(name=f"{name}_pend")
    level = Signal(range(3), name=f"{name}_level")
    head, tail = Signal(len(rdata), name=f"{name}_head"), Signal(len(rdata), name=f"{name}_tail")
    c_col = Signal(range(TOKENS + 1), name=f"{name}_col")
    c_beat = Signal(range(per_word), name=f"{name}_beat")
    valid = level != 0
    take = valid & ready
    row_end = c_col + unit_lanes >= cols
    pop = take & (row_end | (c_beat == per_word - 1))
    issue = run & (q_row < rows) & (level + pend < 2 + pop)
    with m.If(issue):
        m.d.comb += raddr.eq(base + q_off + q_word)
        m.d.sync += q_word.eq(q_word + 1)
        with m.If(q_word + 1 == row_words):
            m.d.sync += [q_word.eq(0), q_row.eq(q_row + 1), q_off.eq(q_off + stride)]
    m.d.sync += pend.eq(issue)
    with m.If(pend & ~pop):
        m.d.sync += level.eq(level + 1)
        with m.If(level == 0):
            m.d.sync += head.eq(rdata)
        with m.Else():
            m.d.sync += tail.eq(rdata)
    with m.Elif(pop & ~pend):
        m.d.sync += [level.eq(level - 1), head.eq(tail)]
    with m.Elif(pop & pend):
        with m.If(level == 1):
            m.d.sync += head.eq(rdata)
        with m.Else():
            m.d.sync += [head.eq(tail), tail.eq(rdata)]
    with m.If(take):
        m.d.sync += [c_col.eq(c_col + unit_lanes), c_beat.eq(c_beat + 1)]
        with m.If(row_end):
            m.d.sync += [c_col.eq(0), c_beat.eq(0)]
        with m.Elif(c_beat == per_word - 1):
            m.d.sync += c_beat.eq(0)
    with m.If(~run):
        m.d.sync += [q_row.eq(0), q_word.eq(0), q_off.eq(0), pend.eq(0), level.eq(0), c_col.eq(0), c_beat.eq(0)]
    payload = head if per_word == 1 else head.word_select(c_beat, unit_lanes * elem_bits)
    return valid, payload


class Controller(wiring.Component):
    """Instruction fetch/decode/sequencing with every enabled datapath unit.

    Ports:
        start: pulse: run the program from instruction 0 (ignored while busy).
        busy: high while running; done: high after ``END`` until the next ``start``;
        error: high with ``done`` when the program hit an opcode whose unit is not built.
        cycles: cycles of the last (or current) run; tokens: the token-count register.
        instr: index of the instruction being executed (the last one after ``END``);
        issue: high for the one cycle in which instruction ``instr`` is dispatched (its ``cycles``
            value then is the instruction's start time: a profiler latches it).
        load_param: the loader's current ``LOAD`` targets the parameter scratchpad (its words are
            ``param_word_bits`` wide; others ``word_bits``): the memory port sizes its beats by it.
        imem_raddr / imem_rdata: instruction memory read port (synchronous, one cycle).
        act_*, wt_*, prm_*: scratchpad read (``raddr``/``rdata``) and write
            (``waddr``/``wdata``/``we``) ports.
        dma_in: stream of words for ``LOAD`` (the low bits of each are the word);
        dma_out: stream of activation words from ``STORE``.
    """

    def __init__(self, *, config: HwConfig):
        if not isinstance(config, HwConfig):
            raise TypeError(f"config must be a HwConfig, not {type(config).__name__}")
        if config.selector and config.max_heads > config.lanes:
            raise ValueError(f"the SELECT score row needs max_heads <= lanes, not {config.max_heads} > {config.lanes}")
        self._config = cfg = config
        self.dma_bits = max(cfg.word_bits, cfg.param_word_bits)
        super().__init__({
            "start": In(1),
            "busy": Out(1),
            "done": Out(1),
            "error": Out(1),
            "cycles": Out(CYCLE_BITS),
            "tokens": Out(range(TOKENS + 1)),
            **flat("imem", scratchpad_read(cfg.addr_bits(cfg.imem_depth), INSTR_BITS)),
            **{name: member for prefix, depth, bits in scratchpads(cfg)
               for sig in (scratchpad_read(cfg.addr_bits(depth), bits), scratchpad_write(cfg.addr_bits(depth), bits))
               for name, member in flat(prefix, sig).items()},
            "dma_in": In(stream.Signature(self.dma_bits)),
            "dma_out": Out(stream.Signature(cfg.word_bits)),
            "instr": Out(cfg.addr_bits(cfg.imem_depth)),
            "issue": Out(1),
            "load_param": Out(1),
        })

    @property
    def config(self) -> HwConfig:
        return self._config

    def _units(self, m: Module) -> dict[int, tuple[units.Unit, wiring.Component]]:
        """The enabled units of :mod:`vitforge.hw.units` other than the GEMM sequencer and the adder, by opcode."""
        built = {}
        for unit in units.controlled(self._config):
            if unit.kind in ("gemm", "add"):
                continue
            block = unit.build(self._config)
            m.submodules[unit.submodule] = block
            built[unit.op] = (unit, block)
        return built

    def elaborate(self, platform):
        cfg = self._config
        lanes, bits = cfg.lanes, cfg.act_bits
        u = cfg.unit_lanes
        wide = u > 1  # the units (SELECT's compactor too) take u elements per transfer
        m = Module()
        m.submodules.gemm = seq = units.UNITS["gemm_sequencer"].build(cfg)
        m.submodules.residual = add = units.UNITS["residual"].build(cfg)
        rowwise = self._units(m)

        # --- fetch/decode state ---------------------------------------------------------------
        pc = Signal(cfg.addr_bits(cfg.imem_depth))
        ins = Signal(instr_layout(cfg))  # GEMM.gelu decoded with fuse_gelu only
        op = ins.op
        tokens = Signal(range(TOKENS + 1))
        m.d.comb += [self.tokens.eq(tokens), self.imem_raddr.eq(pc)]

        def dim(value):
            """A size field, with TOKENS replaced by the token register."""
            return Mux(value == TOKENS, tokens, value)

        def count(value):
            """A word count, per token if PER_TOKEN is set."""
            per = value & (PER_TOKEN - 1)
            return Mux(value & PER_TOKEN, per * tokens, value)

        running = Signal()
        cycles = Signal(CYCLE_BITS)
        m.d.comb += [self.busy.eq(running), self.cycles.eq(cycles)]
        with m.If(running):
            m.d.sync += cycles.eq(cycles + 1)

        # --- GEMM -------------------------------------------------------------------------------
        g = ins.args.gemm
        gemm_instr = Signal.like(seq.instr)
        m.d.comb += gemm_instr.eq(g)
        m.d.comb += [gemm_instr.m.eq(dim(g.m)), gemm_instr.k.eq(dim(g.k)), gemm_instr.n.eq(dim(g.n)),
                     seq.instr.eq(gemm_instr)]

        m.d.comb += [add.mult_a.eq(ins.args.add.mult_a), add.mult_b.eq(ins.args.add.mult_b),
                     add.shift.eq(ins.args.add.shift)]

        # --- common counters for ADD / LOAD / STORE ---------------------------------------------
        addr_shape = unsigned(MAX_ADDR_BITS + 1)
        idx = Signal(addr_shape)
        n_words = Signal(addr_shape)
        a_word = Signal(cfg.word_bits)

        # --- row streamer (row-wise units and SELECT) -------------------------------------------
        rw = ins.args.layernorm  # every row-wise opcode shares this layout
        sl = ins.args.select
        rows, cols = Signal(range(TOKENS + 1)), Signal(range(TOKENS + 1))
        src_addr, src_stride = Signal(addr_shape), Signal(addr_shape)
        dst_addr, dst_stride = Signal(addr_shape), Signal(addr_shape)
        prm_base = Signal(addr_shape)
        is_select = Signal()
        # reader
        r_row, r_col = Signal(range(TOKENS + 1)), Signal(range(TOKENS + 1))
        r_row_addr = Signal(addr_shape)
        r_buf = Signal(cfg.word_bits)
        r_lane = Signal(range(lanes))
        r_word = Signal(range(TOKENS + 1))
        e_valid, e_ready = Signal(), Signal()
        e_data = Signal(bits)
        scores_buf = Signal(cfg.word_bits)
        s_valid, s_ready = Signal(), Signal()
        # writer
        w_row, w_col = Signal(range(TOKENS + 1)), Signal(range(TOKENS + 1))
        w_row_addr = Signal(addr_shape)
        w_word = Signal(addr_shape)
        w_lane = Signal(range(lanes))
        w_buf = Signal(cfg.word_bits)
        o_valid, o_last, o_end = Signal(), Signal(), Signal()
        o_data = Signal(bits)
        w_done = Signal()
        # LayerNorm parameter reader
        p_col = Signal(range(TOKENS + 1))
        p_word = Signal(addr_shape)
        p_buf = Signal(cfg.param_word_bits)
        p_lane = Signal(range(lanes))
        p_valid, p_ready = Signal(), Signal()
        ln_eps = Signal(cfg.acc_bits)
        ln_mult = Signal(cfg.mult_bits)
        ln_shift = Signal(cfg.shift_bits)
        threshold = Signal(SCORE_BITS)

        m.d.comb += e_data.eq(r_buf[:bits])
        lane_layout = param_lane_layout(cfg)
        # At unit_lanes > 1: the pipelined element and parameter beats, the results, the stream state.
        v_valid, v_ready, v_data = Signal(), Signal(), Signal(u * bits)
        pv_valid, pv_ready, pv_data = Signal(), Signal(), Signal(u * lane_layout.size)
        o_vec = Signal(u * bits)
        streaming, ln_active = Signal(), Signal()
        r_words = Signal(range(TOKENS + 1))
        el_valid, el_ready, el_data, res_data = (v_valid, v_ready, v_data, o_vec) if wide else \
            (e_valid, e_ready, e_data, o_data)

        # Element and scores streams into the selected unit; results out of it.
        for code, (spec, unit) in rowwise.items():
            active = op == code
            if spec.kind == "select":
                m.d.comb += [
                    unit.threshold.eq(threshold), unit.n_tokens.eq(rows), unit.dim.eq(cols),
                    unit.tokens.valid.eq(e_valid & active),
                    unit.tokens.payload.eq(r_buf[:u * bits] if wide else e_data),
                    unit.scores.valid.eq(s_valid & active),
                    unit.scores.payload.first.eq(r_row == 0),
                    unit.o.ready.eq(active),
                ]
                for h in range(cfg.max_heads):
                    m.d.comb += [unit.scores.payload.scores[h].eq(scores_buf[h * bits:h * bits + SCORE_BITS]),
                                 unit.scores.payload.weights[h].eq(r_buf[h * bits:(h + 1) * bits])]
                with m.If(active):
                    m.d.comb += [e_ready.eq(unit.tokens.ready), s_ready.eq(unit.scores.ready),
                                 o_valid.eq(unit.o.valid), (o_vec if wide else o_data).eq(unit.o.payload.data),
                                 o_last.eq(unit.o.payload.last), o_end.eq(unit.o.payload.end)]
                continue
            m.d.comb += [unit.i.valid.eq(el_valid & active), unit.i.payload.eq(el_data), unit.o.ready.eq(active)]
            if spec.kind in ("row", "layernorm"):
                m.d.comb += unit.length.eq(cols)
            if spec.kind == "layernorm":
                m.d.comb += [unit.eps_q.eq(ln_eps), unit.mult.eq(ln_mult), unit.shift.eq(ln_shift)]
                if wide:
                    m.d.comb += [unit.params.valid.eq(pv_valid & active), ln_active.eq(active)]
                    for j in range(u):
                        lane = pv_data.word_select(j, lane_layout.size)
                        m.d.comb += [unit.params.payload[j].beta.eq(lane[:cfg.acc_bits]),
                                     unit.params.payload[j].gamma.eq(lane[cfg.acc_bits:cfg.acc_bits + bits])]
                else:
                    m.d.comb += [unit.params.valid.eq(p_valid & active),
                                 unit.params.payload.beta.eq(p_buf[:cfg.acc_bits]),
                                 unit.params.payload.gamma.eq(p_buf[cfg.acc_bits:cfg.acc_bits + bits])]
            with m.If(active):
                m.d.comb += [el_ready.eq(unit.i.ready), o_valid.eq(unit.o.valid)]
                if spec.kind == "layernorm":
                    m.d.comb += (pv_ready if wide else p_ready).eq(unit.params.ready)
                if spec.kind in ("row", "layernorm"):
                    m.d.comb += res_data.eq(unit.o.payload.data)
                else:
                    m.d.comb += res_data.eq(unit.o.payload)

        # --- port defaults ------------------------------------------------------------------------
        m.d.comb += [
            self.act_raddr.eq(seq.act_raddr), self.wt_raddr.eq(seq.wt_raddr), self.prm_raddr.eq(seq.prm_raddr),
            seq.act_rdata.eq(self.act_rdata), seq.wt_rdata.eq(self.wt_rdata), seq.prm_rdata.eq(self.prm_rdata),
            self.act_waddr.eq(seq.act_waddr), self.act_wdata.eq(seq.act_wdata), self.act_we.eq(seq.act_we),
            self.dma_out.payload.eq(a_word),
        ]

        prm_lane0 = data.View(lane_layout, self.prm_rdata[:lane_layout.size])

        # --- loader: LOAD words from dma_in into a scratchpad, beside the other instructions -------
        ld = ins.args.load
        queue_depth = cfg.load_queue
        ld_left, ld_addr, ld_mem = Signal(addr_shape), Signal(addr_shape), Signal(2)
        q_left = Array(Signal(addr_shape, name=f"q_left{i}") for i in range(queue_depth))
        q_addr = Array(Signal(addr_shape, name=f"q_addr{i}") for i in range(queue_depth))
        q_mem = Array(Signal(2, name=f"q_mem{i}") for i in range(queue_depth))
        q_head, q_tail = Signal(range(queue_depth)), Signal(range(queue_depth))
        q_level = Signal(range(queue_depth + 1))
        pending = Signal(range(queue_depth + 2))  # LOADs not finished: the current one and the queued
        ld_start, ld_push = Signal(), Signal()  # from the main FSM: start the decoded LOAD now / queue it
        ld_fire = Signal()
        m.d.comb += [
            pending.eq(q_level + (ld_left != 0)),
            self.dma_in.ready.eq(ld_left != 0),
            ld_fire.eq(self.dma_in.valid & (ld_left != 0)),
            self.load_param.eq(ld_mem == Mem.PARAM),
        ]
        with m.If(ld_fire):
            m.d.sync += [ld_left.eq(ld_left - 1), ld_addr.eq(ld_addr + 1)]
            with m.Switch(ld_mem):
                with m.Case(Mem.ACT):
                    m.d.comb += [self.act_we.eq(1), self.act_waddr.eq(ld_addr), self.act_wdata.eq(self.dma_in.payload)]
                with m.Case(Mem.WEIGHT):
                    m.d.comb += [self.wt_we.eq(1), self.wt_waddr.eq(ld_addr), self.wt_wdata.eq(self.dma_in.payload)]
                with m.Case(Mem.PARAM):
                    m.d.comb += [self.prm_we.eq(1), self.prm_waddr.eq(ld_addr), self.prm_wdata.eq(self.dma_in.payload)]
        pop = Signal()
        m.d.comb += pop.eq((q_level != 0) & ((ld_left == 0) | ((ld_left == 1) & ld_fire)))
        with m.If(pop):
            m.d.sync += [ld_left.eq(q_left[q_head]), ld_addr.eq(q_addr[q_head]), ld_mem.eq(q_mem[q_head]),
                         q_head.eq(Mux(q_head == queue_depth - 1, 0, q_head + 1))]
        with m.If(ld_start):  # only with pending == 0: no word is taken, nothing pops
            m.d.sync += [ld_left.eq(count(ld.count)), ld_addr.eq(ld.addr), ld_mem.eq(ld.mem)]
        with m.If(ld_push):  # only with q_level < queue_depth
            m.d.sync += [q_left[q_tail].eq(count(ld.count)), q_addr[q_tail].eq(ld.addr), q_mem[q_tail].eq(ld.mem),
                         q_tail.eq(Mux(q_tail == queue_depth - 1, 0, q_tail + 1))]
        m.d.sync += q_level.eq(q_level + ld_push - pop)
        # The decoded LOAD goes on beside the next instructions (nowait, weights or parameters).
        ld_async = Signal()
        m.d.comb += ld_async.eq(ld.nowait & ((ld.mem == Mem.WEIGHT) | (ld.mem == Mem.PARAM)))

        def hand_over_load():
            """In a state of the main FSM: start or queue the decoded LOAD if the loader allows it now
            (then fetch the next instruction, or wait in LOAD for a blocking one), else wait in LOAD_QUEUE."""
            with m.If(pending == 0):
                m.d.comb += ld_start.eq(1)
                with m.If(ld_async):
                    m.next = "FETCH"
                with m.Else():
                    m.next = "LOAD"
            with m.Elif(ld_async & (q_level < queue_depth)):
                m.d.comb += ld_push.eq(1)
                m.next = "FETCH"
            with m.Else():
                m.next = "LOAD_QUEUE"

        # --- writer (row-wise results and SELECT output), runs beside the reader ------------------
        writing = Signal()
        if not wide:  # one result per transfer
            row_end = Mux(is_select, o_last, w_col + 1 == cols)
            merged = w_buf | (o_data.as_unsigned() << (w_lane * bits))
            with m.If(writing & o_valid):
                with m.If(row_end | (w_lane == lanes - 1)):
                    m.d.comb += [self.act_we.eq(1), self.act_waddr.eq(w_row_addr + w_word), self.act_wdata.eq(merged)]
                    m.d.sync += [w_buf.eq(0), w_lane.eq(0), w_word.eq(w_word + 1)]
                with m.Else():
                    m.d.sync += [w_buf.eq(merged), w_lane.eq(w_lane + 1)]
                m.d.sync += w_col.eq(w_col + 1)
                with m.If(row_end):
                    m.d.sync += [w_col.eq(0), w_word.eq(0), w_row.eq(w_row + 1),
                                 w_row_addr.eq(w_row_addr + dst_stride), w_lane.eq(0), w_buf.eq(0)]
                    with m.If(Mux(is_select, o_end, w_row + 1 == rows)):
                        m.d.sync += [w_done.eq(1), writing.eq(0)]
                        with m.If(is_select):
                            m.d.sync += tokens.eq(w_row + 1)
        else:  # u results per transfer; lanes past the row's end are written as 0
            with m.If(writing & o_valid):
                v_end = Mux(is_select, o_last, w_col + u >= cols)
                kept_lanes = []  # a loop, not a generator: a closure over cols would cost the signals their names
                for j in range(u):
                    kept_lanes.append(Mux(w_col + j < cols, o_vec.word_select(j, bits), 0))
                kept = Cat(*kept_lanes)
                v_merged = w_buf | (kept << (w_lane * (u * bits))) if lanes > u else kept
                with m.If(v_end | (w_lane == lanes // u - 1)):
                    m.d.comb += [self.act_we.eq(1), self.act_waddr.eq(w_row_addr + w_word), self.act_wdata.eq(v_merged)]
                    m.d.sync += [w_buf.eq(0), w_lane.eq(0), w_word.eq(w_word + 1)]
                with m.Else():
                    m.d.sync += [w_buf.eq(v_merged), w_lane.eq(w_lane + 1)]
                m.d.sync += w_col.eq(w_col + u)
                with m.If(v_end):
                    m.d.sync += [w_col.eq(0), w_word.eq(0), w_row.eq(w_row + 1),
                                 w_row_addr.eq(w_row_addr + dst_stride), w_lane.eq(0), w_buf.eq(0)]
                    with m.If(Mux(is_select, o_end, w_row + 1 == rows)):
                        m.d.sync += [w_done.eq(1), writing.eq(0)]
                        with m.If(is_select):
                            m.d.sync += tokens.eq(w_row + 1)

        # --- LayerNorm parameter reader: beta/gamma per element, every row ------------------------
        p_state = Signal(2)  # 0 idle, 1 issue, 2 latch, 3 emit
        m.d.comb += p_valid.eq(p_state == 3)
        if wide:  # the element and parameter beats, pipelined, while ROW_STREAM runs
            valid, payload = _beat_reader(m, "rd", run=streaming, raddr=self.act_raddr, rdata=self.act_rdata,
                                          base=src_addr, stride=src_stride, rows=rows, cols=cols, row_words=r_words,
                                          lanes=lanes, unit_lanes=u, elem_bits=bits, ready=v_ready)
            m.d.comb += [v_valid.eq(valid), v_data.eq(payload)]
            valid, payload = _beat_reader(m, "prm", run=streaming & ln_active, raddr=self.prm_raddr,
                                          rdata=self.prm_rdata, base=prm_base, stride=0, rows=rows, cols=cols,
                                          row_words=r_words, lanes=lanes, unit_lanes=u,
                                          elem_bits=lane_layout.size, ready=pv_ready)
            m.d.comb += [pv_valid.eq(valid), pv_data.eq(payload)]
        else:  # one element at a time, two bubbles per parameter word
            with m.Switch(p_state):
                with m.Case(1):
                    m.d.comb += self.prm_raddr.eq(prm_base + p_word)
                    m.d.sync += p_state.eq(2)
                with m.Case(2):
                    m.d.comb += self.prm_raddr.eq(prm_base + p_word)
                    m.d.sync += [p_buf.eq(self.prm_rdata), p_state.eq(3)]
                with m.Case(3):
                    with m.If(p_ready):
                        m.d.sync += [p_buf.eq(p_buf >> lane_layout.size), p_lane.eq(p_lane + 1),
                                     p_col.eq(p_col + 1)]
                        with m.If(p_col + 1 == cols):
                            m.d.sync += [p_col.eq(0), p_word.eq(0), p_lane.eq(0), p_state.eq(1)]
                        with m.Elif(p_lane == lanes - 1):
                            m.d.sync += [p_word.eq(p_word + 1), p_lane.eq(0), p_state.eq(1)]

        # --- ADD's writer at unit_lanes > 1: the adder's result, the cycle it leaves ------------------
        if wide:
            add_b_read = Signal()  # ADD_B read b last cycle (a_word holds a): the pair goes to the adder
            add_w_idx = Signal(addr_shape)
            m.d.comb += add.output.ready.eq(1)
            with m.If(add.output.valid):
                m.d.comb += [self.act_we.eq(1), self.act_waddr.eq(ins.args.add.dst_addr + add_w_idx),
                             self.act_wdata.eq(add.output.payload)]
                m.d.sync += add_w_idx.eq(add_w_idx + 1)

        # --- main FSM -----------------------------------------------------------------------------
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [pc.eq(0), running.eq(1), cycles.eq(0), self.done.eq(0), self.error.eq(0),
                                 tokens.eq(0)]
                    m.d.sync += [ld_left.eq(0), q_level.eq(0), q_head.eq(0), q_tail.eq(0)]
                    m.next = "FETCH"
            with m.State("FETCH"):  # the instruction memory reads pc
                m.next = "DECODE"
            with m.State("DECODE"):
                m.d.sync += [ins.eq(self.imem_rdata), pc.eq(pc + 1), self.instr.eq(pc)]
                m.next = "DISPATCH"
            with m.State("DISPATCH"):
                m.d.sync += idx.eq(0)
                m.d.comb += self.issue.eq(1)
                with m.Switch(op):
                    with m.Case(Op.END):
                        with m.If(pending == 0):
                            m.d.sync += [running.eq(0), self.done.eq(1)]
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "END_WAIT"
                    with m.Case(Op.SYNC):
                        with m.If(pending <= ins.args.sync.pending):
                            m.next = "FETCH"
                        with m.Else():
                            m.next = "SYNC_WAIT"
                    with m.Case(Op.GEMM):
                        m.d.comb += seq.start.eq(1)
                        m.next = "GEMM"
                    with m.Case(Op.ADD):
                        m.d.sync += n_words.eq(count(ins.args.add.count))
                        if wide:
                            m.d.sync += add_w_idx.eq(0)
                        m.next = "ADD_A"
                    with m.Case(Op.LOAD):
                        hand_over_load()
                    with m.Case(Op.STORE):
                        m.d.sync += n_words.eq(count(ins.args.store.count))
                        m.next = "STORE_RD"
                    for code, (spec, _) in rowwise.items():
                        selects = spec.kind == "select"
                        with m.Case(code):
                            fields = sl if selects else rw
                            m.d.sync += [
                                is_select.eq(selects),
                                rows.eq(dim(sl.n_tokens) if selects else dim(rw.rows)),
                                cols.eq(sl.dim if selects else dim(rw.cols)),
                                src_addr.eq(sl.tokens_addr if selects else rw.src_addr),
                                src_stride.eq(sl.tokens_stride if selects else rw.src_stride),
                                dst_addr.eq(fields.dst_addr),
                                dst_stride.eq(sl.tokens_stride if selects else rw.dst_stride),
                                prm_base.eq(fields.param_addr),
                                r_row.eq(0), r_col.eq(0), r_lane.eq(0), r_word.eq(0),
                                r_row_addr.eq(sl.tokens_addr if selects else rw.src_addr),
                                w_row.eq(0), w_col.eq(0), w_word.eq(0), w_lane.eq(0), w_buf.eq(0), w_done.eq(0),
                                w_row_addr.eq(fields.dst_addr),
                                p_col.eq(0), p_word.eq(0), p_lane.eq(0),
                            ]
                            m.next = "ROW_PARAMS"
                    with m.Default():
                        m.d.sync += [running.eq(0), self.done.eq(1), self.error.eq(1)]
                        m.next = "IDLE"

            with m.State("GEMM"):
                with m.If(~seq.busy):
                    m.next = "FETCH"

            if not wide:
                # ADD: read a, read b, add, write; one word at a time.
                with m.State("ADD_A"):
                    with m.If(idx == n_words):
                        m.next = "FETCH"
                    with m.Else():
                        m.d.comb += self.act_raddr.eq(ins.args.add.a_addr + idx)
                        m.next = "ADD_B"
                with m.State("ADD_B"):
                    m.d.comb += self.act_raddr.eq(ins.args.add.b_addr + idx)
                    m.d.sync += a_word.eq(self.act_rdata)
                    m.next = "ADD_SUM"
                with m.State("ADD_SUM"):
                    m.d.comb += [add.input.valid.eq(1), add.input.payload.a.eq(a_word),
                                 add.input.payload.b.eq(self.act_rdata)]
                    with m.If(add.input.ready):
                        m.next = "ADD_WRITE"
                with m.State("ADD_WRITE"):
                    m.d.comb += add.output.ready.eq(1)
                    with m.If(add.output.valid):
                        m.d.comb += [self.act_we.eq(1), self.act_waddr.eq(ins.args.add.dst_addr + idx),
                                     self.act_wdata.eq(add.output.payload)]
                        m.d.sync += idx.eq(idx + 1)
                        m.next = "ADD_A"
            else:
                # ADD, pipelined: read a, read b, then a's next read while the adder takes the pair; the
                # adder's result is written (above) while b's next read goes: two cycles per word.
                with m.State("ADD_A"):
                    m.d.comb += [add.input.valid.eq(add_b_read), add.input.payload.a.eq(a_word),
                                 add.input.payload.b.eq(self.act_rdata)]
                    m.d.sync += add_b_read.eq(0)
                    with m.If(idx == n_words):
                        m.next = "FETCH"
                    with m.Else():
                        m.d.comb += self.act_raddr.eq(ins.args.add.a_addr + idx)
                        m.next = "ADD_B"
                with m.State("ADD_B"):
                    m.d.comb += self.act_raddr.eq(ins.args.add.b_addr + idx)
                    m.d.sync += [a_word.eq(self.act_rdata), idx.eq(idx + 1), add_b_read.eq(1)]
                    m.next = "ADD_A"

            # LOAD: the loader takes the words; a blocking LOAD waits here until they are in.
            with m.State("LOAD_QUEUE"):
                hand_over_load()
            with m.State("LOAD"):
                with m.If(ld_left == 0):
                    m.next = "FETCH"
            with m.State("SYNC_WAIT"):
                with m.If(pending <= ins.args.sync.pending):
                    m.next = "FETCH"
            with m.State("END_WAIT"):
                with m.If(pending == 0):
                    m.d.sync += [running.eq(0), self.done.eq(1)]
                    m.next = "IDLE"

            with m.State("STORE_RD"):
                with m.If(idx == n_words):
                    m.next = "FETCH"
                with m.Else():
                    m.d.comb += self.act_raddr.eq(ins.args.store.addr + idx)
                    m.next = "STORE_LATCH"
            with m.State("STORE_LATCH"):
                m.d.sync += a_word.eq(self.act_rdata)
                m.next = "STORE_SEND"
            with m.State("STORE_SEND"):
                m.d.comb += self.dma_out.valid.eq(1)
                with m.If(self.dma_out.ready):
                    m.d.sync += idx.eq(idx + 1)
                    m.next = "STORE_RD"

            # Row-wise units and SELECT: read the per-instruction parameter word first.
            with m.State("ROW_PARAMS"):
                # LayerNorm: the trailer after the per-channel words; SELECT: the threshold word.
                m.d.comb += self.prm_raddr.eq(Mux(is_select, prm_base, prm_base + _ceil_div(cols, lanes)))
                m.next = "ROW_PARAMS_LATCH"
            with m.State("ROW_PARAMS_LATCH"):
                m.d.sync += [ln_eps.eq(prm_lane0.bias), ln_mult.eq(prm_lane0.mult), ln_shift.eq(prm_lane0.shift),
                             threshold.eq(prm_lane0.bias[:SCORE_BITS]), writing.eq(1)]
                for code, (spec, _) in rowwise.items():
                    if spec.kind == "layernorm":
                        with m.If(op == code):
                            m.d.sync += p_state.eq(1)
                if wide:
                    m.d.sync += r_words.eq(_ceil_div(cols, lanes))
                with m.If(is_select):
                    m.next = "SCORE_RD0"
                with m.Else():
                    m.next = "ROW_STREAM" if wide else "ROW_RD"
            # SELECT: the token's two score words, then its elements.
            with m.State("SCORE_RD0"):
                m.d.comb += self.act_raddr.eq(ins.args.select.scores_addr + (r_row << 1))
                m.next = "SCORE_RD1"
            with m.State("SCORE_RD1"):
                m.d.comb += self.act_raddr.eq(ins.args.select.scores_addr + (r_row << 1) + 1)
                m.d.sync += scores_buf.eq(self.act_rdata)
                m.next = "SCORE_LATCH"
            with m.State("SCORE_LATCH"):
                m.d.sync += r_buf.eq(self.act_rdata)
                m.next = "SCORE_SEND"
            with m.State("SCORE_SEND"):
                m.d.comb += s_valid.eq(1)
                with m.If(s_ready):
                    m.next = "ROW_RD"
            with m.State("ROW_RD"):
                with m.If(r_row == rows):
                    m.next = "ROW_WAIT"
                with m.Else():
                    m.d.comb += self.act_raddr.eq(r_row_addr + r_word)
                    m.next = "ROW_LATCH"
            with m.State("ROW_LATCH"):
                m.d.sync += [r_buf.eq(self.act_rdata), r_lane.eq(0)]
                m.next = "ROW_EMIT"
            with m.State("ROW_EMIT"):  # at unit_lanes > 1 (SELECT only): u elements per transfer
                per_word = lanes // u
                m.d.comb += e_valid.eq(1)
                with m.If(e_ready):
                    m.d.sync += [r_buf.eq(r_buf >> (u * bits)), r_lane.eq(r_lane + 1), r_col.eq(r_col + u)]
                    with m.If(r_lane == per_word - 1):
                        m.d.sync += r_word.eq(r_word + 1)
                    with m.If(r_col + u >= cols if wide else r_col + 1 == cols):
                        m.d.sync += [r_col.eq(0), r_word.eq(0), r_row.eq(r_row + 1),
                                     r_row_addr.eq(r_row_addr + src_stride)]
                        with m.If(is_select & (r_row + 1 != rows)):
                            m.next = "SCORE_RD0"
                        with m.Else():
                            m.next = "ROW_RD"
                    with m.Elif(r_lane == per_word - 1):
                        m.next = "ROW_RD"
            with m.State("ROW_WAIT"):
                with m.If(w_done):
                    m.d.sync += p_state.eq(0)
                    m.next = "FETCH"
            if wide:  # the pipelined readers run until the writer has written the last row
                with m.State("ROW_STREAM"):
                    m.d.comb += streaming.eq(1)
                    with m.If(w_done):
                        m.next = "FETCH"
        return m


__all__ = ["CYCLE_BITS", "Controller"]
