"""The accelerator's cycle model: cycles per instruction and per program, summed from the units'
formulas (:mod:`vitforge.hw.units`, :mod:`vitforge.hw.timing`).

:class:`CycleModel` gives the cycles of every :mod:`vitforge.hw.isa` instruction from the
:class:`~vitforge.hw.config.HwConfig` and the instruction's fields (``TOKENS`` / ``PER_TOKEN`` resolved
by the live token count), and of a whole :class:`~vitforge.hw.compiler.Program` given the token count
each ``SELECT`` leaves. It is exact against the RTL on the stream port (sim/latency_calib.py) and on the
AXI port with sim/rtl.py's DDR (scripts/bench_rtl.py); hw/timing.py documents the formulas.

A program follows two timelines: the controller's (one instruction after the other) and the
loader's (:class:`Loader`: the ``LOAD nowait``\\ s it works on beside compute, in order). They meet
where the controller waits for the loader: a ``SYNC``, a blocking ``LOAD``, ``END``, or a
``LOAD nowait`` that finds the queue full (hw/controller.py's loader).
"""

from __future__ import annotations

from collections.abc import Sequence

from . import timing, units
from .config import HwConfig
from .isa import Mem, Op
from .timing import DEFAULT_READ_LATENCY, ISSUE_CYCLES, PORTS, START_CYCLES

#: Scratchpads a ``LOAD nowait`` fills beside compute (a ``nowait`` LOAD into another one blocks).
OVERLAPPED = (Mem.WEIGHT, Mem.PARAM)


class Loader:
    """hw/controller.py's loader as a timeline: per ``LOAD`` handed to it, the cycle it takes its first
    word (``start``) and the first cycle it no longer counts as unfinished (``finish = start +
    transfer cycles``). Times are the controller's ``cycles`` values.

    Args:
        queue: ``HwConfig.load_queue``, the LOADs it queues behind the one it is loading.
    """

    def __init__(self, queue: int):
        self.queue = queue
        self.starts: list[int] = []
        self.finishes: list[int] = []
        self.queued_at: list[bool] = []

    @property
    def last_finish(self) -> int:
        return self.finishes[-1] if self.finishes else 0

    def unfinished(self, t: int) -> int:
        """LOADs not finished at cycle ``t``."""
        return sum(1 for f in self.finishes if f > t)

    def queued(self, t: int) -> int:
        """LOADs waiting in the queue at cycle ``t`` (pushed, not started)."""
        return sum(1 for s, q in zip(self.starts, self.queued_at, strict=True) if q and s > t)

    def blocking(self, dispatch: int, transfer: int) -> int:
        """A blocking LOAD dispatched at ``dispatch``: waits for every LOAD, then loads; returns its finish."""
        wait = max(dispatch, self.last_finish)
        self._add(wait + 1, transfer, queued=False)
        return self.last_finish

    def overlapped(self, dispatch: int, transfer: int) -> int:
        """A ``LOAD nowait`` dispatched at ``dispatch``; returns the cycle the controller hands it over
        (``dispatch``, or later if the queue was full)."""
        t = dispatch
        while True:
            if self.unfinished(t) == 0:  # the loader is idle: it starts in the next cycle
                self._add(t + 1, transfer, queued=False)
                return t
            if self.queued(t) < self.queue:  # queued: starts after the one before it, two cycles on at the earliest
                self._add(max(self.last_finish, t + 2), transfer, queued=True)
                return t
            # Full: the next change is a queued LOAD starting (the queue shrinks) or the last finishing.
            t = max(t + 1, min([s for s, q in zip(self.starts, self.queued_at, strict=True) if q and s > t]
                               + [self.last_finish]))

    def wait(self, dispatch: int, pending: int) -> int:
        """The cycle from which at most ``pending`` LOADs are unfinished (``dispatch`` if already so)."""
        later = [f for f in self.finishes if f > dispatch]
        if len(later) <= pending:
            return dispatch
        return later[len(later) - pending - 1]

    def _add(self, start: int, transfer: int, queued: bool) -> None:
        self.starts.append(start)
        self.finishes.append(start + transfer)
        self.queued_at.append(queued)


class CycleModel:
    """Cycles per instruction and per program of the accelerator built from ``cfg``.

    Args:
        cfg: the hardware configuration.
        port: ``"stream"`` (hw/top.py EncoderTop's ``dma_in``/``dma_out``, one word per cycle) or
            ``"axi"`` (hw/axi.py AxiTop, what the rtl backend and the board run: a LOAD word is
            ``cfg.beats(bits)`` beats).
        read_latency: ``"axi"``: the memory's read latency in cycles (default
            :data:`~vitforge.hw.timing.DEFAULT_READ_LATENCY`, sim/rtl.py's DDR).
    """

    def __init__(self, cfg: HwConfig, port: str = "stream", read_latency: int = DEFAULT_READ_LATENCY):
        if not isinstance(cfg, HwConfig):
            raise TypeError(f"cfg must be a HwConfig, not {type(cfg).__name__}")
        self.cfg = cfg
        self.port = port
        self.timing = timing.port_timing(port)
        self.first_load_extra = max(0, read_latency + timing.AXI_FIRST_LOAD_SKEW) if port == "axi" else 0
        self.load_queue = cfg.load_queue

    dim = staticmethod(timing.dim)
    count = staticmethod(timing.count)

    def instr_cycles(self, instr, tokens: int, pruned: bool = False) -> int:
        """Cycles of ``instr`` with the token-count register at ``tokens`` (dispatch to next dispatch).

        ``pruned``: for ``SELECT``, whether it pruned any token (and so wrote a package token).
        Unit opcodes are timed by their :class:`~vitforge.hw.units.Unit`'s ``cycles``. ``LOAD nowait``
        (into the weight or parameter scratchpad), ``SYNC`` and ``END`` are timed with the loader
        idle; :meth:`program_cycles` follows the loader.
        """
        op = instr.op
        if op == Op.LOAD and instr.nowait and Mem(instr.mem) in OVERLAPPED:
            return ISSUE_CYCLES
        if op == Op.LOAD:
            return timing.load_cycles(self.cfg, self.timing, self.port, timing.count(instr.count, tokens),
                                      Mem(instr.mem))
        if op == Op.STORE:
            return timing.store_cycles(self.cfg, self.timing, self.port, timing.count(instr.count, tokens))
        if op == Op.SYNC:
            return timing.SYNC_CYCLES
        if op == Op.END:
            return timing.END_CYCLES
        try:
            unit = units.by_op(op)
        except KeyError:
            raise ValueError(f"no cycle model for opcode {op!r}") from None
        return unit.cycles(self.cfg, instr, tokens, pruned)

    # --- per program ---------------------------------------------------------------------------

    def program_cycles(self, program, select_tokens: Sequence[int] = (),
                       pruned: Sequence[bool] | None = None) -> dict:
        """Cycles of ``program`` (a :class:`~vitforge.hw.compiler.Program`).

        Args:
            select_tokens: the token count each ``SELECT`` leaves (kept tokens plus the package
                token), one per ``SELECT`` in program order.
            pruned: per ``SELECT``, whether it pruned any token. Default: fewer rows out than in
                (exact except when exactly one token is pruned: the package token then keeps the
                count, and the default misses the package pass: a divider's latency and the package
                token, :func:`vitforge.hw.timing.select_cycles`).

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
        loader = Loader(self.load_queue)
        first_load = True
        t = START_CYCLES  # the controller's timeline: this instruction's dispatch
        for ins in program.instrs:
            if ins.op == Op.SELECT:
                n = self.dim(ins.n_tokens, tokens)
                kept = select_tokens[s]
                if not 1 <= kept <= n:
                    raise ValueError(f"SELECT {s} sees {n} tokens; it cannot leave {kept} (valid: 1..{n})")
                per_instr.append(self.instr_cycles(ins, tokens, kept < n if pruned is None else bool(pruned[s])))
                tokens, s = kept, s + 1
            elif ins.op == Op.LOAD:
                mem = Mem(ins.mem)
                transfer = timing.load_transfer_cycles(self.cfg, self.timing, self.port,
                                                       timing.count(ins.count, tokens), mem)
                if first_load:  # the run's first LOAD also waits for the memory's first data
                    transfer, first_load = transfer + self.first_load_extra, False
                if ins.nowait and mem in OVERLAPPED:
                    per_instr.append(loader.overlapped(t, transfer) + ISSUE_CYCLES - t)
                else:
                    per_instr.append(loader.blocking(t, transfer) + ISSUE_CYCLES - t)
            elif ins.op == Op.SYNC:
                per_instr.append(max(t, loader.wait(t, ins.pending)) + timing.SYNC_CYCLES - t)
            elif ins.op == Op.END:
                per_instr.append(max(t, loader.last_finish) + timing.END_CYCLES - t)
            else:
                per_instr.append(self.instr_cycles(ins, tokens))
            t += per_instr[-1]
        layers = program.layers or ["program"] * len(per_instr)
        per_layer: dict[str, int] = {}
        for i, (name, c) in enumerate(zip(layers, per_instr, strict=True)):
            per_layer[name] = per_layer.get(name, 0) + c + (START_CYCLES if i == 0 else 0)
        total = START_CYCLES + sum(per_instr)
        return {"total": total, "per_instr": per_instr, "per_layer": per_layer}

    def op_cycles(self, program, select_tokens: Sequence[int] = (), pruned: Sequence[bool] | None = None) -> dict:
        """Where the cycles of ``program`` go (args as :meth:`program_cycles`).

        Returns:
            ``{"per_op": {opcode name: cycles on the controller's timeline}, "load_transfer": cycles
            the loader spends taking words (every LOAD's transfer, the first one's read latency
            included), "total": int}``. With every LOAD blocking, ``per_op["LOAD"]`` is the transfers
            plus 4 issue cycles per LOAD; what overlapped LOADs leave on the controller's timeline is
            ``per_op["LOAD"] + per_op["SYNC"]`` (issue cycles and waits).
        """
        res = self.program_cycles(program, select_tokens, pruned)
        per_op: dict[str, int] = {}
        for ins, c in zip(program.instrs, res["per_instr"], strict=True):
            per_op[ins.op.name] = per_op.get(ins.op.name, 0) + c
        tokens, s, transfer = 0, 0, self.first_load_extra if any(i.op == Op.LOAD for i in program.instrs) else 0
        kept = [int(t) for t in select_tokens]
        for ins in program.instrs:
            if ins.op == Op.SELECT:
                tokens, s = kept[s], s + 1
            elif ins.op == Op.LOAD:
                transfer += timing.load_transfer_cycles(self.cfg, self.timing, self.port,
                                                        timing.count(ins.count, tokens), Mem(ins.mem))
        return {"per_op": per_op, "load_transfer": transfer, "total": res["total"]}

    def gemm_layers(self, program, select_tokens: Sequence[int] = (),
                    pruned: Sequence[bool] | None = None) -> list[dict]:
        """MAC utilization of every ``GEMM`` of ``program``, instructions of one layer and shape merged.

        Args: as :meth:`program_cycles`.

        Returns:
            One row per (layer, shape, operand source), in program order: ``layer``, ``m``, ``k``,
            ``n``, ``b_act``, ``b_trans``, ``mean``, ``count`` (instructions merged), ``macs``,
            ``cycles`` (dispatch to next dispatch, summed), ``utilization`` (``macs / (cycles x
            pe_rows x lanes)``), ``bound`` (the tile occupancy: ``m x n`` over M and N rounded up to
            the array) and ``of_bound`` (``utilization / bound``).
        """
        cfg = self.cfg
        per_instr = self.program_cycles(program, select_tokens, pruned)["per_instr"]
        layers = program.layers or ["program"] * len(per_instr)
        rows: dict[tuple, dict] = {}
        tokens, s = 0, 0
        kept = [int(t) for t in select_tokens]
        for ins, layer, cycles in zip(program.instrs, layers, per_instr, strict=True):
            if ins.op == Op.SELECT:
                tokens, s = kept[s], s + 1
                continue
            if ins.op != Op.GEMM:
                continue
            m, k, n = (self.dim(v, tokens) for v in (ins.m, ins.k, ins.n))
            key = (layer, m, k, n, bool(ins.b_act), bool(ins.b_trans), bool(ins.mean))
            row = rows.setdefault(key, {"layer": layer, "m": m, "k": k, "n": n, "b_act": key[4], "b_trans": key[5],
                                        "mean": key[6], "count": 0, "macs": 0, "cycles": 0})
            row["count"] += 1
            row["macs"] += m * k * n
            row["cycles"] += cycles
        out = []
        for row in rows.values():
            m, n = row["m"], row["n"]
            row["utilization"] = row["macs"] / (row["cycles"] * cfg.macs) if row["cycles"] else 0.0
            row["bound"] = tile_occupancy(cfg, m, n)
            row["of_bound"] = row["utilization"] / row["bound"] if row["bound"] else 0.0
            out.append(row)
        return out


def tile_occupancy(cfg: HwConfig, m: int, n: int) -> float:
    """The share of the PE array an ``(m, *) x (*, n)`` GEMM can use: ``m x n`` over M and N rounded
    up to whole ``pe_rows x lanes`` tiles (1.0 when both are multiples of the array)."""
    if min(m, n) <= 0:
        return 0.0
    padded = -(-m // cfg.pe_rows) * cfg.pe_rows * cfg.row_words(n) * cfg.lanes
    return m * n / padded



__all__ = ["OVERLAPPED", "PORTS", "START_CYCLES", "CycleModel", "Loader", "tile_occupancy"]
