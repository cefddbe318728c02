"""The accelerator's cycle model: cycles per instruction and per program, summed from the units'
formulas (:mod:`vitforge.hw.units`, :mod:`vitforge.hw.timing`).

:class:`CycleModel` gives the cycles of every :mod:`vitforge.hw.isa` instruction from the
:class:`~vitforge.hw.config.HwConfig` and the instruction's fields (``TOKENS`` / ``PER_TOKEN`` resolved
by the live token count), and of a whole :class:`~vitforge.hw.compiler.Program` given the token count
each ``SELECT`` leaves. It is exact against the RTL on the stream port (sim/latency_calib.py) and on the
AXI port with sim/rtl.py's DDR (scripts/bench_rtl.py); hw/timing.py documents the formulas.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import timing, units
from .config import HwConfig
from .isa import Mem, Op
from .timing import DEFAULT_READ_LATENCY, PORTS, START_CYCLES


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

    dim = staticmethod(timing.dim)
    count = staticmethod(timing.count)

    def instr_cycles(self, instr, tokens: int, pruned: bool = False) -> int:
        """Cycles of ``instr`` with the token-count register at ``tokens`` (dispatch to next dispatch).

        ``pruned``: for ``SELECT``, whether it pruned any token (and so wrote a package token).
        Unit opcodes are timed by their :class:`~vitforge.hw.units.Unit`'s ``cycles``.
        """
        op = instr.op
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



__all__ = ["PORTS", "START_CYCLES", "CycleModel", "tile_occupancy"]
