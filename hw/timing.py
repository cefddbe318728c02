"""Cycle formulas of the accelerator's instructions (hw/controller.py on hw/top.py), as functions of the
:class:`~vitforge.hw.config.HwConfig` and the instruction's sizes: no block is elaborated to read them.

The formulas are read off the RTL (one cycle per FSM state; the units' latencies from the blocks' own
static ``latency`` attributes and ``latency_for`` functions) and are exact on the stream port: the
Amaranth-simulator profile (sim/latency_calib.py, tests/sim/test_latency.py) agrees cycle for cycle.
:mod:`vitforge.hw.units` attaches one of them to every unit; :mod:`vitforge.hw.cycles` sums them over
a program.

Accounting: an instruction's cycles run from its dispatch (the controller's ``issue`` pulse) to the next
instruction's dispatch, so they include the ``FETCH``/``DECODE`` of the next one; ``END`` counts its
dispatch cycle; the two cycles from ``start`` to the first dispatch are :data:`START_CYCLES`.

Per instruction (``rows = pe_rows``, ``lanes = pe_cols``, ``rw(c) = ceil(c / lanes)``):

* ``GEMM``: operand blocks (per output tile, ``ceil(m/rows) x ceil(n/lanes)`` tiles, ``rw(k)`` K blocks
  of up to ``lanes`` steps) are read in :func:`reads_per_block` cycles (``max(rows, lanes)``, or
  ``rows + lanes`` when B is an activation, except where one operand comes from the operand cache:
  :func:`cached_operand`) while the block before steps, one K step per cycle:
  a block costs ``max(steps, reads)`` cycles in the steady state, plus one engine bubble per tile
  and, for tiles shorter than ``rows + 1`` cycles, the drain; :func:`gemm_busy_cycles` follows the
  sequencer block by block. Then the last tile's drain (``rows`` + the requantizer) and the
  hand-back. ``mean`` adds the reciprocal divider (its latency + 1) first; ``gelu`` (``fuse_gelu``)
  adds the GELU drain's latency to the last tile's drain (earlier tiles' rows leave under the next
  tile's accumulation as before).
* ``ADD``: four cycles per word (two at ``unit_lanes > 1``: pipelined); ``LOAD``: one per word (stream
  port); ``STORE``: three per word.
* ``LOAD nowait``, ``SYNC``, ``END``: the issue cycles while the loader lets them go on; the loader's
  own timeline (the starts and finishes of its LOADs, and the waits) is :class:`vitforge.hw.cycles.Loader`.
* streaming row-wise units (``GELU``/``SIGMOID``): per row ``cols + 2 rw(cols)`` (one element per
  cycle, two bubbles per word read), plus the unit's latency. At ``unit_lanes = U > 1``: per row
  ``ceil(cols / U)`` transfers, back to back (the reader is pipelined), plus the unit's latency.
* row-buffering units (``SOFTMAX``/``LAYERNORM``): a row is taken only after the previous one has
  left (at ``U > 1`` their rows overlap instead: ``SOFTMAX``, :func:`softmax_row_schedule`;
  ``LAYERNORM``, below): per row the read span, the unit's ``latency(cols)`` and its output pass
  (LayerNorm's output waits on its parameter words: two bubbles per word).
* ``LAYERNORM`` at ``U > 1``: rows overlap in the unit (load, variance, square root, reciprocal and
  output pass of different rows at once; the parameter reader is pipelined): row by row through the
  unit's stages, :func:`layernorm_pipeline_times`; in the steady state a row costs about
  ``max(ceil(cols / U), (divider latency + 1) / copies)`` cycles.
* ``SELECT``: per token the two score-word reads, the fused-score divider (``FuseScore.latency``), the
  token's transfers (``unit_lanes`` elements each; two bubbles per word read); then, if any token was
  pruned, the package divider and the package token (one element per cycle: at ``unit_lanes = U > 1``
  ``U + 1`` cycles per transfer).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

from vitforge.quant.nonlinear import SOFTMAX_RECIP_BITS
from vitforge.quant.selector import MEAN_RECIP_BITS, PACKAGE_RECIP_BITS

from .config import HwConfig
from .divider import Divider
from .gemm import GeluDrain, Requantizer
from .isa import PER_TOKEN, TOKENS, Mem
from .selector import FuseScore, TokenCompactor

#: Cycles from ``start`` to the first dispatch (``FETCH``, ``DECODE``).
START_CYCLES = 2
#: Cycles every instruction spends in the controller outside its unit: its ``DISPATCH`` and the
#: next instruction's ``FETCH`` and ``DECODE``.
ISSUE_CYCLES = 3
#: ``END``: its dispatch cycle is the last one counted.
END_CYCLES = 1
#: ``SYNC`` (a no-op barrier): dispatch, fetch, decode.
SYNC_CYCLES = ISSUE_CYCLES
#: GEMM from the engine taking the last tile to ``busy`` falling, beyond its ``pe_rows`` rows: the
#: drain's first row, the requantizer, ``wb_done``, ``DRAIN`` seeing it.
GEMM_END_CYCLES = 1 + Requantizer.latency + 1
#: A ``GEMM`` with ``gelu`` (``HwConfig.fuse_gelu``): its last row's extra way through the GELU lanes.
GEMM_GELU_CYCLES = GeluDrain.latency
#: GEMM cycles outside the sequencer's ``busy``: the dispatch (``start``) cycle, the controller's
#: ``GEMM`` state seeing ``busy`` fall, ``FETCH``, ``DECODE``.
GEMM_HANDBACK_CYCLES = 4
#: GEMM whose m, k or n is 0: the sequencer never starts.
GEMM_EMPTY_CYCLES = 4
#: ADD: read a, read b, add, write.
ADD_WORD_CYCLES = 4
#: ADD at ``unit_lanes > 1``: read a, read b; the add and the write overlap the next word's reads (the
#: last word's write falls in the next instruction's ``FETCH``).
ADD_PIPELINED_WORD_CYCLES = 2
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
#: The sequencer's ``RECIP`` state hands the count to the divider, ``RECIP_WAIT`` waits for its result.
GEMM_MEAN_CYCLES = 1 + Divider.latency_for(MEAN_RECIP_BITS + 1)
#: TokenCompactor: ``DIVIDE`` hands the weight sum to the divider, ``RECIP`` waits for the result.
PACKAGE_DIVIDE_CYCLES = 1 + Divider.latency_for(PACKAGE_RECIP_BITS + 1)

# --- memory-port costs (the part that depends on how LOAD/STORE words reach the controller) -------

#: AXI port (hw/axi.py AxiTop with sim/rtl.py's DDR): the read engine prefetches the input stream
#: (up to ``HwConfig.axi_max_inflight`` beats, one beat per cycle), so a LOAD costs its beats and no
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
#: Memory ports the model knows: ``stream`` (EncoderTop's ``dma_in``/``dma_out``, one word per
#: cycle) and ``axi`` (hw/axi.py AxiTop: what the rtl backend and the board run).
PORTS = ("stream", "axi")
#: The read latency (cycles) of the memory behind the AXI port that the model assumes by default;
#: sim/rtl.py's emulated DDR answers with it.
DEFAULT_READ_LATENCY = 16


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


# --- resolution of dynamic sizes -------------------------------------------------------------------


def dim(value: int, tokens: int) -> int:
    """A size field with :data:`~vitforge.hw.isa.TOKENS` replaced by the live token count."""
    return tokens if value == TOKENS else value


def count(value: int, tokens: int) -> int:
    """A word count, times the token count if :data:`~vitforge.hw.isa.PER_TOKEN` is set."""
    return (value & (PER_TOKEN - 1)) * tokens if value & PER_TOKEN else value


# --- per instruction --------------------------------------------------------------------------------


def reads_per_block(cfg: HwConfig, b_act: bool, from_cache: bool = False) -> int:
    """Cycles the GEMM sequencer's reader takes for one operand block (``pe_rows`` A words and
    ``lanes`` B words): A and B at once on two ports (B on the weight port, or, ``from_cache``, one of
    them from the operand cache), or one after the other when both are read on the activation port."""
    return cfg.pe_rows + cfg.lanes if b_act and not from_cache else max(cfg.pe_rows, cfg.lanes)


def cache_holds_b(cfg: HwConfig, k: int, n: int) -> bool:
    """Whether a ``GEMM``'s B of ``(k, n)`` fits the operand cache's B half
    (``HwConfig.operand_cache_words / 2``): its ``ceil(k / lanes) x ceil(n / lanes)`` blocks of ``lanes`` words."""
    return cfg.row_words(k) * cfg.row_words(n) * cfg.lanes <= cfg.operand_cache_words // 2


def cache_holds_a(cfg: HwConfig, k: int) -> bool:
    """Whether the A words of one M tile of a ``GEMM`` of depth ``k`` (``pe_rows x ceil(k / lanes)``)
    fit the operand cache's A half (``HwConfig.operand_cache_words / 2``)."""
    return cfg.pe_rows * cfg.row_words(k) <= cfg.operand_cache_words // 2


def cached_operand(cfg: HwConfig, k: int, n: int, mt: int, nt: int) -> str | None:
    """Which operand a ``b_act`` GEMM's blocks of output tile ``(mt, nt)`` read from the operand cache:
    ``"b"`` after the first M tile when B fits (:func:`cache_holds_b`), else ``"a"`` after an M tile's
    first N tile when its A fits (:func:`cache_holds_a`), else ``None`` (both on the activation port)."""
    if mt > 0 and cache_holds_b(cfg, k, n):
        return "b"
    if nt > 0 and cache_holds_a(cfg, k):
        return "a"
    return None


def gemm_cycles(cfg: HwConfig, m: int, k: int, n: int, mean: bool = False, b_act: bool = False,
                gelu: bool = False) -> int:
    """Cycles of a ``GEMM`` of ``(m, k) x (k, n)`` (sizes resolved); ``b_act``: B is read from the
    activation scratchpad (one read port for both operands); ``gelu``: the fused GELU
    (``HwConfig.fuse_gelu``)."""
    if min(m, k, n) == 0:
        return GEMM_EMPTY_CYCLES
    return gemm_busy_cycles(cfg, m, k, n, mean, b_act, gelu) + GEMM_HANDBACK_CYCLES


@lru_cache(maxsize=1 << 14)
def gemm_busy_cycles(cfg: HwConfig, m: int, k: int, n: int, mean: bool = False, b_act: bool = False,
                     gelu: bool = False) -> int:
    """Cycles the GEMM sequencer's ``busy`` is high for a ``GEMM`` of ``(m, k) x (k, n)`` (all
    sizes positive; ``b_act`` and ``gelu`` as in :func:`gemm_cycles`).

    The blocks (tile by tile, K block by K block) follow hw/gemm.py's GemmSequencer: block ``b`` is
    read in ``W`` cycles from ``I_b`` (ready to swap in at ``F_b = I_b + W + 1``), swapped into the
    live buffer at ``X_b = max(F_b, L_{b-1})`` (the previous block's last K step), stepped from
    ``X_b + 1`` (a tile's first block also waits for the engine to take the previous tile) to
    ``L_b``; the next block's reads start at ``X_b - 1`` when the swap was certain a cycle ahead,
    else at ``X_b``. ``W`` is :func:`reads_per_block`: with ``b_act``, ``pe_rows + lanes`` in the
    blocks that read both operands on the activation port, else ``max(pe_rows, lanes)`` (one of them
    from the operand cache: :func:`cached_operand`). The engine takes tile ``t`` at ``max(L + 1,
    take_{t-1} + pe_rows + 1)`` (its drain registers free); the last tile's rows then leave through
    the requantizer (and, with ``gelu``, the GELU drain).
    """
    if min(m, k, n) <= 0:
        raise ValueError(f"gemm_busy_cycles needs positive sizes, not m={m}, k={k}, n={n}")
    if gelu and not cfg.fuse_gelu:
        raise ValueError("a GEMM with gelu needs a config with fuse_gelu")
    rows, lanes = cfg.pe_rows, cfg.lanes
    block_steps = [min(lanes, k - lanes * j) for j in range(cfg.row_words(k))]
    issue = (GEMM_MEAN_CYCLES if mean else 0)  # the first block's first read; busy from 0
    last, last_steps, take = None, 0, None
    for mt, nt in itertools.product(range(-(-m // rows)), range(cfg.row_words(n))):  # the tiles, mt outer
        reads = reads_per_block(cfg, b_act, from_cache=b_act and cached_operand(cfg, k, n, mt, nt) is not None)
        for j, s in enumerate(block_steps):
            ready = issue + reads + 1
            if last is None or ready > last:  # the stepper waits for this block
                swap, certain = ready, True
            else:  # the block waits for the stepper's last step of the block before
                swap, certain = last, last_steps >= 2
            first = swap + 1
            if j == 0 and take is not None:  # the engine's bubble: it takes the previous tile first
                first = max(first, take + 1)
            issue = swap - 1 if certain else swap
            last, last_steps = first + s - 1, s
        take = last + 1 if take is None else max(last + 1, take + rows + 1)
    return take + rows + GEMM_END_CYCLES + (GEMM_GELU_CYCLES if gelu else 0)


def add_cycles(cfg: HwConfig, words: int) -> int:
    """Cycles of an ``ADD`` of ``words`` words (resolved): :data:`ADD_WORD_CYCLES` per word, or
    :data:`ADD_PIPELINED_WORD_CYCLES` at ``unit_lanes > 1``."""
    per_word = ADD_PIPELINED_WORD_CYCLES if cfg.unit_lanes > 1 else ADD_WORD_CYCLES
    return words * per_word + WORD_LOOP_CYCLES


def _row_span(cfg: HwConfig, cols: int, one_element: bool = False) -> int:
    """Reader cycles from a row's first transfer to its last (no stalls inside a row); ``one_element``:
    the one-element path (``SELECT``'s at every ``unit_lanes``)."""
    if cfg.unit_lanes > 1 and not one_element:  # pipelined reads: one transfer per cycle
        return cfg.row_beats(cols) - 1
    return cols - 1 + ROW_WORD_BUBBLES * (cfg.row_words(cols) - 1)


def streaming_cycles(cfg: HwConfig, rows: int, cols: int, latency: int) -> int:
    """Cycles of a row-wise instruction on a streaming unit (one transfer in, one out per cycle) of
    pipeline ``latency`` over ``rows x cols`` (resolved)."""
    head = 1 + ROW_START_CYCLES  # dispatch, then to the first element
    if cfg.unit_lanes > 1:
        # ROW_PARAMS, ROW_PARAMS_LATCH, the first read and its queue entry take the same four
        # cycles as the one-element path's start; then every row's transfers back to back.
        last_in = head + rows * cfg.row_beats(cols) - 1
        return last_in + latency + ROW_TAIL_CYCLES
    # rows x (elements + bubbles); the last element leaves the unit latency cycles later.
    last_in = head + rows * (cols + ROW_WORD_BUBBLES * cfg.row_words(cols)) - ROW_WORD_BUBBLES - 1
    return last_in + latency + ROW_TAIL_CYCLES


def buffering_cycles(cfg: HwConfig, rows: int, cols: int, latency: int, out_pass: int) -> int:
    """Cycles of a row-wise instruction on a row-buffering unit (it takes a row only after the previous
    one has left) with ``latency`` cycles from a row's last input to its first output and an output
    pass of ``out_pass`` cycles, over ``rows x cols`` (resolved)."""
    head = 1 + ROW_START_CYCLES
    # The unit takes the next row's first element in the cycle after its last output pass.
    period = _row_span(cfg, cols) + latency + out_pass - 1
    last_in = head + (rows - 1) * period + _row_span(cfg, cols)
    return last_in + latency + out_pass - 1 + ROW_TAIL_CYCLES


def softmax_row_schedule(cfg: HwConfig, rows: int, cols: int) -> list[tuple[int, int]]:
    """When each row passes through the pipelined softmax (``SoftmaxUnit`` at ``unit_lanes = U > 1``):
    per row, the cycle its first transfer is taken and the cycle its last output leaves, counted from
    the first row's first transfer, with the input always offered and ``o.ready`` high.

    The unit's three stages (hw/nonlinear.py ``SoftmaxUnit._elaborate_lanes``), for row ``r`` of
    ``W = ceil(cols / U)`` transfers: the load takes it into input buffer ``r % X`` once that buffer
    is free (the exp stage finished row ``r - X``), one transfer per cycle; the exp stage starts it
    (one idle cycle) once it is loaded, the stage has handed the row before to its divider and an exp
    buffer is free (the output finished row ``r - E``), runs ``W + 1 + ExpUnit.latency`` cycles, then
    hands the sum to divider ``r % D`` once that one's result for row ``r - D`` was taken; the output
    stage takes the reciprocal when it is ready and it has finished row ``r - 1``, then streams ``W``
    transfers through the output register. ``X, E, D``: ``SOFTMAX_X_SLOTS``, ``SOFTMAX_E_SLOTS``,
    ``SOFTMAX_DIVIDERS``. In the steady state a row costs the largest of ``W + ExpUnit.latency + 3``
    (the exp stage), ``(Divider latency + 1) / D`` and the exp buffers' ``1 / E`` of a row's stay.
    """
    from .nonlinear import SOFTMAX_DIVIDERS, SOFTMAX_E_SLOTS, SOFTMAX_X_SLOTS, ExpUnit

    if cfg.unit_lanes < 2:
        raise ValueError(f"softmax_row_schedule models unit_lanes > 1, not {cfg.unit_lanes}")
    w = cfg.row_beats(cols)
    divide = Divider.latency_for(SOFTMAX_RECIP_BITS + 1)
    a_last, b_end, b_acc, c_take, c_end, out = [], [], [], [], [], []
    for r in range(rows):
        first = 0 if r == 0 else a_last[r - 1] + 1
        if r >= SOFTMAX_X_SLOTS:
            first = max(first, b_end[r - SOFTMAX_X_SLOTS] + 1)
        a_last.append(first + w - 1)
        start = a_last[r] + 1
        if r >= 1:
            start = max(start, b_acc[r - 1] + 1)
        if r >= SOFTMAX_E_SLOTS:
            start = max(start, c_end[r - SOFTMAX_E_SLOTS] + 1)
        b_end.append(start + 1 + w + ExpUnit.latency)
        acc = b_end[r] + 1
        if r >= SOFTMAX_DIVIDERS:
            acc = max(acc, c_take[r - SOFTMAX_DIVIDERS] + 1)
        b_acc.append(acc)
        take = acc + divide
        if r >= 1:
            take = max(take, c_end[r - 1] + 1)
        c_take.append(take)
        c_end.append(take + w)
        out.append((first, c_end[r] + 1))
    return out


def softmax_cycles(cfg: HwConfig, rows: int, cols: int) -> int:
    """Cycles of a ``SOFTMAX`` over ``rows x cols`` (resolved) on the pipelined softmax
    (``unit_lanes > 1``, :func:`softmax_row_schedule`); no rows: as :func:`buffering_cycles`."""
    from .nonlinear import SoftmaxUnit

    if rows < 1:
        return buffering_cycles(cfg, rows, cols, SoftmaxUnit.latency(cols, cfg.unit_lanes), cfg.row_beats(cols))
    last_out = softmax_row_schedule(cfg, rows, cols)[-1][1]
    return 1 + ROW_START_CYCLES + last_out + ROW_TAIL_CYCLES


def layernorm_pipeline_times(beats: list[int], *, var_stages: int, sqrt_latency: int, div_latency: int,
                             copies: int, slots: int, arrivals: list[int] | None = None) -> list[tuple[int, int]]:
    """Per row, the cycles of its first and last transfer into the output register of a LayerNorm unit
    at ``lanes > 1`` (hw/nonlinear.py ``LayerNormUnit._elaborate_lanes``: rows overlap), for rows of
    ``beats[r]`` transfers; ``arrivals[r]``: the first cycle row ``r``'s first transfer is offered
    (default 0: back to back), its other transfers following one per cycle; ``params`` always valid,
    the output always ready. The arguments other than ``beats`` and ``arrivals`` are the unit's
    ``LayerNormUnit.pipeline_for``.

    Row ``r``'s load starts at ``Ls`` (after the row before it, and once the row ``slots`` before it
    has left its slot), its last transfer ``Le`` waits for ``T1`` to be free; then ``var_stages``
    one-row registers ``T1..``, the square root and the reciprocal (instance ``r mod copies`` of each,
    free again the cycle after handing its result on; in row order), the ``G`` register (free when
    the row before it leaves), and the output pass, one transfer per cycle from ``G``'s load + 1.
    """
    if not beats or min(beats) < 1:
        raise ValueError(f"layernorm_pipeline_times needs rows of at least one transfer, not {beats!r}")
    if arrivals is not None and len(arrivals) != len(beats):
        raise ValueError(f"arrivals must give one cycle per row ({len(beats)}), not {len(arrivals)}")
    le: list[int] = []
    stage: list[list[int]] = [[] for _ in range(var_stages)]  # stage[k][r]: T(k+1) takes row r
    hs, so, do, first, last = [], [], [], [], []
    for r, b in enumerate(beats):
        start = arrivals[r] if arrivals is not None else 0
        if r:
            start = max(start, le[r - 1] + 1)
        if r >= slots:
            start = max(start, last[r - slots] + 1)
        end = start + b - 1
        if r:
            end = max(end, stage[1][r - 1] if var_stages > 1 else hs[r - 1])
        le.append(end)
        stage[0].append(end)
        for k in range(1, var_stages):
            t = stage[k - 1][r] + 1
            if r:
                t = max(t, stage[k + 1][r - 1] if k + 1 < var_stages else hs[r - 1])
            stage[k].append(t)
        t = stage[-1][r] + 1
        if r >= copies:
            t = max(t, so[r - copies] + 1)
        hs.append(t)
        t = hs[r] + sqrt_latency
        if r:
            t = max(t, so[r - 1] + 1)
        if r >= copies:
            t = max(t, do[r - copies] + 1)
        so.append(t)
        t = so[r] + div_latency
        if r:
            t = max(t, do[r - 1] + 1, last[r - 1])
        do.append(t)
        first.append(do[r] + 1)
        last.append(first[r] + b - 1)
    return list(zip(first, last, strict=True))


@lru_cache(maxsize=1 << 12)
def layernorm_pipeline_cycles(cfg: HwConfig, rows: int, cols: int, *, var_stages: int, sqrt_latency: int,
                              div_latency: int, copies: int, slots: int, out_latency: int) -> int:
    """Cycles of a ``LAYERNORM`` over ``rows x cols`` (resolved) at ``unit_lanes > 1``, where the unit
    overlaps rows (:func:`layernorm_pipeline_times`; ``out_latency``: its output register): the row
    reader hands the unit one transfer per cycle from the first one on, the writer takes every result."""
    head = 1 + ROW_START_CYCLES
    times = layernorm_pipeline_times([cfg.row_beats(cols)] * rows, var_stages=var_stages, sqrt_latency=sqrt_latency,
                                     div_latency=div_latency, copies=copies, slots=slots)
    return head + times[-1][1] + out_latency + ROW_TAIL_CYCLES


def layernorm_out_pass(cfg: HwConfig, cols: int) -> int:
    """Cycles of LayerNorm's output pass over a row: one per transfer, waiting on its parameter words
    (at ``unit_lanes > 1`` they are read ahead)."""
    if cfg.unit_lanes > 1:
        return cfg.row_beats(cols)
    return cols + LN_PARAM_BUBBLES * (cfg.row_words(cols) - 1)


def select_cycles(cfg: HwConfig, n_tokens: int, dim: int, pruned: bool) -> int:
    """Cycles of a ``SELECT`` over ``n_tokens`` tokens of ``dim``; ``pruned``: whether any token was
    pruned (then the package token is computed and written)."""
    # The token's transfers (unit_lanes elements each), two reader bubbles per word.
    span = cfg.row_beats(dim) - 1 + ROW_WORD_BUBBLES * (cfg.row_words(dim) - 1)
    per_token = SELECT_SCORE_CYCLES + FuseScore.latency + 1 + span
    last_in = 2 + per_token + (n_tokens - 1) * per_token  # dispatch, ROW_PARAMS, LATCH
    if pruned:
        package = cfg.row_beats(dim) * TokenCompactor.package_beat_cycles(cfg.unit_lanes)
        return last_in + PACKAGE_DIVIDE_CYCLES + package + ROW_TAIL_CYCLES
    return last_in + SELECT_TAIL_CYCLES


def load_transfer_cycles(cfg: HwConfig, timing: PortTiming, port: str, words: int, mem: Mem) -> int:
    """Cycles the loader takes ``words`` words into ``mem`` on ``port`` (its first word to its last)."""
    bits = cfg.param_word_bits if mem == Mem.PARAM else cfg.word_bits
    beats = cfg.beats(bits) if port == "axi" else 1
    return words * beats * timing.load_beat_cycles


def load_cycles(cfg: HwConfig, timing: PortTiming, port: str, words: int, mem: Mem) -> int:
    """Cycles of a blocking ``LOAD`` of ``words`` words into ``mem`` on ``port``, the loader idle."""
    return load_transfer_cycles(cfg, timing, port, words, mem) + timing.load_overhead


def store_cycles(cfg: HwConfig, timing: PortTiming, port: str, words: int) -> int:
    """Cycles of a ``STORE`` of ``words`` words on ``port``."""
    total = words * timing.store_word_cycles + timing.store_overhead
    if port == "axi" and words > 1:
        # The write engine takes AXI_STORE_BEAT_CYCLES per beat; the next word waits for it, the
        # last word's writes overlap what follows (the top waits for them before raising done).
        busy = AXI_STORE_BEAT_CYCLES * cfg.beats(cfg.word_bits) + 1
        total += (words - 1) * max(0, busy - timing.store_word_cycles)
    return total


__all__ = ["DEFAULT_READ_LATENCY", "PORTS", "START_CYCLES", "PortTiming", "add_cycles", "buffering_cycles",
           "cache_holds_a", "cache_holds_b", "cached_operand", "count", "dim", "gemm_busy_cycles", "gemm_cycles",
           "layernorm_out_pass", "layernorm_pipeline_cycles", "layernorm_pipeline_times", "load_cycles",
           "load_transfer_cycles", "port_timing", "reads_per_block", "select_cycles", "softmax_cycles",
           "softmax_row_schedule", "store_cycles", "streaming_cycles"]
