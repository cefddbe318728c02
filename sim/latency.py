"""Analytical cycle model of the accelerator (hw/controller.py on hw/top.py), calibrated against the RTL.

:class:`CycleModel` gives the cycles of every :mod:`vitforge.hw.isa` instruction from the
:class:`~vitforge.hw.config.HwConfig` and the instruction's fields (``TOKENS`` / ``PER_TOKEN``
resolved by the live token count), and of a whole :class:`~vitforge.hw.program.Program` given the
token count each ``SELECT`` leaves. The formulas are read off the RTL (one cycle per FSM state;
the units' own ``latency`` properties where they have one) and are exact on the stream port: the
Amaranth-simulator profile (sim/latency_calib.py, tests/sim/test_latency.py) agrees cycle for
cycle.

Accounting: an instruction's cycles run from its dispatch (the controller's ``issue`` pulse) to
the next instruction's dispatch, so they include the ``FETCH``/``DECODE`` of the next one; ``END``
counts its dispatch cycle; the two cycles from ``start`` to the first dispatch are
:data:`START_CYCLES`. The sum is the ``cycles`` port's value at ``done``.

Per instruction (``rows = pe_rows``, ``lanes = pe_cols``, ``rw(c) = ceil(c / lanes)``):

* ``GEMM``: per output tile (``ceil(m/rows) x ceil(n/lanes)`` tiles) ``TILE`` + ``PARAMS`` (2),
  per K block of ``lanes`` (``rw(k)`` blocks) ``BLOCK`` + the operand reads (``rows + lanes + 2``),
  one cycle per K step (``k``); then the last tile's drain (engine latency + ``rows``) and the
  hand-back (4). ``mean`` adds the reciprocal divider (its latency + 1).
* ``ADD``: four cycles per word; ``LOAD``: one per word (stream port); ``STORE``: three per word
  (read, latch, send).
* ``GELU``/``SIGMOID`` (streaming units): per row ``cols + 2 rw(cols)`` (one element per cycle, two
  bubbles per word read), plus the unit's latency.
* ``SOFTMAX``/``LAYERNORM`` (row-buffering units): a row is taken only after the previous one has
  left: per row the read span, the unit's ``latency(cols)`` and its output pass (LayerNorm's
  output waits on its parameter words: two bubbles per word).
* ``SELECT``: per token the two score-word reads, the fused-score divider (``FuseScore.latency``),
  the token's elements; then, if any token was pruned, the package divider and the package token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vitforge.hw.config import HwConfig
from vitforge.hw.isa import PER_TOKEN, TOKENS, Instr, Mem, Op

#: Cycles from ``start`` to the first dispatch (``FETCH``, ``DECODE``).
START_CYCLES = 2
#: Cycles every instruction spends in the controller outside its unit: its ``DISPATCH`` and the
#: next instruction's ``FETCH`` and ``DECODE``.
ISSUE_CYCLES = 3
#: ``END``: its dispatch cycle is the last one counted.
END_CYCLES = 1
#: ``SYNC`` (a no-op barrier): dispatch, fetch, decode.
SYNC_CYCLES = ISSUE_CYCLES
#: GEMM per output tile outside the K loop: ``TILE`` and ``PARAMS``.
GEMM_TILE_CYCLES = 2
#: GEMM per K block outside the operand reads and steps: ``BLOCK`` and the read pipeline's extra cycle.
GEMM_BLOCK_CYCLES = 2
#: GEMM from the last result row to the next dispatch: ``wb_done``, the sequencer back in ``IDLE``,
#: the controller's ``GEMM`` state seeing it, ``FETCH``, ``DECODE``.
GEMM_TAIL_CYCLES = 5
#: GEMM whose m, k or n is 0: the sequencer never starts.
GEMM_EMPTY_CYCLES = 4
#: ADD: read a, read b, add, write.
ADD_WORD_CYCLES = 4
#: STORE on the stream port: read, latch, send.
STORE_WORD_CYCLES = 3
#: ADD/LOAD/STORE: the counter's final check, plus the issue cycles.
WORD_LOOP_CYCLES = 1 + ISSUE_CYCLES
#: Row-wise instructions: ``ROW_PARAMS``, ``ROW_PARAMS_LATCH``, ``ROW_RD`` and ``ROW_LATCH`` before the
#: first element.
ROW_START_CYCLES = 4
#: Row-wise, from the last output to the next dispatch: the writer's ``w_done``, ``ROW_WAIT`` seeing
#: it, ``FETCH``, ``DECODE``.
ROW_TAIL_CYCLES = 4
#: Row-wise reader bubbles per word (``ROW_RD``, ``ROW_LATCH``).
ROW_WORD_BUBBLES = 2
#: LayerNorm's parameter reader bubbles per parameter word (issue, latch).
LN_PARAM_BUBBLES = 2
#: SELECT before a token's elements: ``SCORE_RD0``, ``SCORE_RD1``, ``SCORE_LATCH``, ``SCORE_SEND``
#: and the compactor taking the decision.
SELECT_SCORE_CYCLES = 4
#: SELECT after the last element without a package token: ``ROW_RD``, ``ROW_WAIT``, then as ROW_TAIL.
SELECT_TAIL_CYCLES = 5

# --- memory-port costs (the part that depends on how LOAD/STORE words reach the controller) -------

#: AXI port (hw/axi.py AxiTop with sim/rtl.py's DDR): the read engine prefetches the input stream
#: (up to hw/axi.py's MAX_INFLIGHT beats, one beat per cycle), so a LOAD costs its beats and no
#: more, except the run's first LOAD, which also waits for the DDR's first data: the read latency
#: minus the two cycles the controller spends fetching and decoding it (calibrated on the demo
#: model with `python scripts/bench_rtl.py`; exact on every LOAD).
AXI_FIRST_LOAD_SKEW = -2
#: AXI port: cycles per STORE word (the controller's read, latch and hand-off to the write engine),
#: and the write engine's cycles per beat (address and data, then the response): a word of
#: ``beats`` beats keeps it busy ``2 beats + 1`` cycles, which the next word waits for.
#: Measured on demo (3-word STOREs of one beat) and the zcu102 smoke model (a 1-word STORE of four
#: beats) with `python scripts/bench_rtl.py`; multi-word, multi-beat STOREs follow hw/axi.py's FSM.
AXI_STORE_WORD_CYCLES = 3
AXI_STORE_BEAT_CYCLES = 2
#: Memory ports the model knows.
PORTS = ("stream", "axi")


@dataclass(frozen=True)
class PortTiming:
    """LOAD/STORE costs of a memory port: ``LOAD`` of ``n`` words of ``beats`` each costs
    ``n * beats * load_beat_cycles + load_overhead``; ``STORE`` ``n * store_word_cycles + store_overhead``
    (both on top of nothing else: issue cycles are included in the overheads)."""

    load_beat_cycles: int
    load_overhead: int
    store_word_cycles: int
    store_overhead: int


def port_timing(port: str) -> PortTiming:
    """The :class:`PortTiming` of ``port`` (one of :data:`PORTS`)."""
    if port == "stream":  # EncoderTop's dma_in/dma_out, one word per cycle: calibrated (exact)
        return PortTiming(1, WORD_LOOP_CYCLES, STORE_WORD_CYCLES, WORD_LOOP_CYCLES)
    if port == "axi":  # hw/axi.py AxiTop: calibrated against sim/rtl.py (see AXI_FIRST_LOAD_SKEW)
        return PortTiming(1, WORD_LOOP_CYCLES, AXI_STORE_WORD_CYCLES, WORD_LOOP_CYCLES)
    raise ValueError(f"port must be one of {', '.join(PORTS)}, not {port!r}")


def _silenced(component):
    """A unit built only to read its latency (never elaborated)."""
    component._MustUse__silence = True
    return component


class CycleModel:
    """Cycles per instruction and per program of the accelerator built from ``cfg``.

    Args:
        cfg: the hardware configuration.
        port: ``"stream"`` (hw/top.py EncoderTop's ``dma_in``/``dma_out``, one word per cycle) or
            ``"axi"`` (hw/axi.py AxiTop, what the rtl backend and the board run: a LOAD word is
            ``cfg.beats(bits)`` beats).
        read_latency: ``"axi"``: the memory's read latency in cycles (sim/rtl.py's default).
    """

    def __init__(self, cfg: HwConfig, port: str = "stream", read_latency: int | None = None):
        from vitforge.hw.divider import Divider
        from vitforge.hw.gemm import GemmEngine
        from vitforge.hw.nonlinear import GeluUnit, LayerNormUnit, SigmoidUnit, SoftmaxUnit
        from vitforge.hw.selector import FuseScore
        from vitforge.quant.selector import MEAN_RECIP_BITS, PACKAGE_RECIP_BITS

        if not isinstance(cfg, HwConfig):
            raise TypeError(f"cfg must be a HwConfig, not {type(cfg).__name__}")
        self.cfg = cfg
        self.port = port
        self.timing = port_timing(port)
        if read_latency is None:
            from vitforge.sim.rtl import READ_LATENCY as read_latency
        self.first_load_extra = max(0, read_latency + AXI_FIRST_LOAD_SKEW) if port == "axi" else 0
        self._engine_latency = _silenced(GemmEngine(config=cfg)).latency
        # The sequencer's RECIP state hands the count to the divider, RECIP_WAIT waits for its result.
        self._mean_cycles = 1 + _silenced(Divider(dividend_width=MEAN_RECIP_BITS + 1, divisor_width=1)).latency
        self._softmax = _silenced(SoftmaxUnit(numerics=cfg.numerics, max_len=cfg.max_tokens))
        self._layernorm = _silenced(LayerNormUnit(numerics=cfg.numerics, max_dim=cfg.max_embed_dim))
        self._stream_latency = {Op.GELU: GeluUnit.latency, Op.SIGMOID: SigmoidUnit.latency}
        self._fuse_latency = _silenced(FuseScore(heads=1)).latency
        # TokenCompactor: DIVIDE hands the weight sum to the divider, RECIP waits for the result.
        self._package_divide = 1 + _silenced(Divider(dividend_width=PACKAGE_RECIP_BITS + 1, divisor_width=1)).latency

    # --- resolution of dynamic sizes -------------------------------------------------------------

    @staticmethod
    def dim(value: int, tokens: int) -> int:
        """A size field with :data:`TOKENS` replaced by the live token count."""
        return tokens if value == TOKENS else value

    @staticmethod
    def count(value: int, tokens: int) -> int:
        """A word count, times the token count if :data:`PER_TOKEN` is set."""
        return (value & (PER_TOKEN - 1)) * tokens if value & PER_TOKEN else value

    # --- per instruction ---------------------------------------------------------------------------

    def gemm_cycles(self, m: int, k: int, n: int, mean: bool = False) -> int:
        """Cycles of a ``GEMM`` of ``(m, k) x (k, n)`` (sizes resolved)."""
        cfg = self.cfg
        if min(m, k, n) == 0:
            return GEMM_EMPTY_CYCLES
        tiles = -(-m // cfg.pe_rows) * cfg.row_words(n)
        k_blocks = cfg.row_words(k)
        tile = GEMM_TILE_CYCLES + k + k_blocks * (cfg.pe_rows + cfg.lanes + GEMM_BLOCK_CYCLES)
        # The last tile's rows leave the engine latency cycles after its last K step, one per cycle.
        drain = self._engine_latency + cfg.pe_rows - 1
        return (self._mean_cycles if mean else 0) + tiles * tile + drain + GEMM_TAIL_CYCLES

    def _row_span(self, cols: int) -> int:
        """Reader cycles from a row's first element to its last (no stalls inside a row)."""
        return cols - 1 + ROW_WORD_BUBBLES * (self.cfg.row_words(cols) - 1)

    def rowwise_cycles(self, op: Op, rows: int, cols: int) -> int:
        """Cycles of a ``GELU``/``SIGMOID``/``SOFTMAX``/``LAYERNORM`` over ``rows x cols`` (resolved)."""
        rw = self.cfg.row_words(cols)
        head = 1 + ROW_START_CYCLES  # dispatch, then to the first element
        if op in self._stream_latency:
            # rows x (elements + bubbles); the last element leaves the unit latency cycles later.
            last_in = head + rows * (cols + ROW_WORD_BUBBLES * rw) - ROW_WORD_BUBBLES - 1
            return last_in + self._stream_latency[op] + ROW_TAIL_CYCLES
        if op == Op.SOFTMAX:
            latency, out_pass = self._softmax.latency(cols), cols
        elif op == Op.LAYERNORM:
            latency, out_pass = self._layernorm.latency(cols), cols + LN_PARAM_BUBBLES * (rw - 1)
        else:
            raise ValueError(f"{op.name} is not a row-wise instruction")
        # The unit takes the next row's first element in the cycle after its last output pass.
        period = self._row_span(cols) + latency + out_pass - 1
        last_in = head + (rows - 1) * period + self._row_span(cols)
        return last_in + latency + out_pass - 1 + ROW_TAIL_CYCLES

    def select_cycles(self, n_tokens: int, dim: int, pruned: bool) -> int:
        """Cycles of a ``SELECT`` over ``n_tokens`` tokens of ``dim``; ``pruned``: whether any token
        was pruned (then the package token is computed and written)."""
        per_token = SELECT_SCORE_CYCLES + self._fuse_latency + 1 + self._row_span(dim)
        last_in = 2 + per_token + (n_tokens - 1) * per_token  # dispatch, ROW_PARAMS, LATCH
        if pruned:
            return last_in + self._package_divide + dim + ROW_TAIL_CYCLES
        return last_in + SELECT_TAIL_CYCLES

    def load_cycles(self, words: int, mem: Mem) -> int:
        bits = self.cfg.param_word_bits if mem == Mem.PARAM else self.cfg.word_bits
        beats = self.cfg.beats(bits) if self.port == "axi" else 1
        return words * beats * self.timing.load_beat_cycles + self.timing.load_overhead

    def store_cycles(self, words: int) -> int:
        total = words * self.timing.store_word_cycles + self.timing.store_overhead
        if self.port == "axi" and words > 1:
            # The write engine takes AXI_STORE_BEAT_CYCLES per beat; the next word waits for it, the
            # last word's writes overlap what follows (the top waits for them before raising done).
            busy = AXI_STORE_BEAT_CYCLES * self.cfg.beats(self.cfg.word_bits) + 1
            total += (words - 1) * max(0, busy - self.timing.store_word_cycles)
        return total

    def instr_cycles(self, instr: Instr, tokens: int, pruned: bool = False) -> int:
        """Cycles of ``instr`` with the token-count register at ``tokens`` (dispatch to next dispatch).

        ``pruned``: for ``SELECT``, whether it pruned any token (and so wrote a package token).
        """
        op, dim = instr.op, (lambda v: self.dim(v, tokens))
        if op == Op.GEMM:
            return self.gemm_cycles(dim(instr.m), dim(instr.k), dim(instr.n), bool(instr.mean))
        if op == Op.ADD:
            return self.count(instr.count, tokens) * ADD_WORD_CYCLES + WORD_LOOP_CYCLES
        if op == Op.LOAD:
            return self.load_cycles(self.count(instr.count, tokens), Mem(instr.mem))
        if op == Op.STORE:
            return self.store_cycles(self.count(instr.count, tokens))
        if op in (Op.GELU, Op.SIGMOID, Op.SOFTMAX, Op.LAYERNORM):
            return self.rowwise_cycles(op, dim(instr.rows), dim(instr.cols))
        if op == Op.SELECT:
            return self.select_cycles(dim(instr.n_tokens), instr.dim, pruned)
        if op == Op.SYNC:
            return SYNC_CYCLES
        if op == Op.END:
            return END_CYCLES
        raise ValueError(f"no cycle model for opcode {op!r}")

    # --- per program ---------------------------------------------------------------------------

    def program_cycles(self, program, select_tokens: Sequence[int] = (),
                       pruned: Sequence[bool] | None = None) -> dict:
        """Cycles of ``program`` (a :class:`~vitforge.hw.program.Program`).

        Args:
            select_tokens: the token count each ``SELECT`` leaves (kept tokens plus the package
                token), one per ``SELECT`` in program order.
            pruned: per ``SELECT``, whether it pruned any token. Default: fewer rows out than in
                (exact except when exactly one token is pruned: the package token then keeps the
                count, and the default misses the package pass, ``dim`` + a divider's latency).

        Returns:
            ``{"total": int, "per_instr": [int], "per_layer": {layer: int}}``; ``per_layer`` follows
            ``program.layers`` (the start-up cycles count to the first layer) and sums to ``total``.
        """
        selects = sum(1 for ins in program.instrs if ins.op == Op.SELECT)
        select_tokens = [int(t) for t in select_tokens]
        if len(select_tokens) != selects:
            raise ValueError(f"the program has {selects} SELECT instruction(s); select_tokens has "
                             f"{len(select_tokens)} entries: {select_tokens}")
        if pruned is not None and len(pruned) != selects:
            raise ValueError(f"the program has {selects} SELECT instruction(s); pruned has {len(pruned)} entries")
        tokens, s = 0, 0
        per_instr = []
        for ins in program.instrs:
            if ins.op == Op.SELECT:
                n = self.dim(ins.n_tokens, tokens)
                kept = select_tokens[s]
                if not 1 <= kept <= n:
                    raise ValueError(f"SELECT {s} sees {n} tokens; it cannot leave {kept} (valid: 1..{n})")
                per_instr.append(self.instr_cycles(ins, tokens, kept < n if pruned is None else bool(pruned[s])))
                tokens, s = kept, s + 1
            else:
                per_instr.append(self.instr_cycles(ins, tokens))
        loads = [k for k, ins in enumerate(program.instrs) if ins.op == Op.LOAD]
        if loads:
            per_instr[loads[0]] += self.first_load_extra
        layers = program.layers or ["program"] * len(per_instr)
        per_layer: dict[str, int] = {}
        for i, (name, c) in enumerate(zip(layers, per_instr, strict=True)):
            per_layer[name] = per_layer.get(name, 0) + c + (START_CYCLES if i == 0 else 0)
        total = START_CYCLES + sum(per_instr)
        return {"total": total, "per_instr": per_instr, "per_layer": per_layer}


__all__ = ["PORTS", "START_CYCLES", "CycleModel", "PortTiming", "port_timing"]
