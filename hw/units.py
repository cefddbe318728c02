"""The accelerator's units, registered once.

Every datapath block the controller runs, or that stands alone in ``vitforge rtl generate``, is one
:class:`Unit` in :data:`UNITS`: its name, the opcode it runs, the config flag that builds it, its
builder, its instance path under ``encoder_top``, how the controller streams it (``kind``), its cycles
per instruction (a :mod:`vitforge.hw.timing` formula; no elaboration) and its cycle budget. The
controller (hw/controller.py), ``rtl generate`` (hw/cli.py), ``rtl report``'s per-block split
(hw/synth.py), the Verilator lint list, the cycle model (hw/cycles.py) and the runtime's cycle budget
(sw/runtime.py) loop over this table: a new unit is one entry, its block and its tests
(ARCHITECTURE.md).

Kinds (what the controller's row streamer drives; hw/controller.py documents the data layouts):

* ``gemm``: the GEMM sequencer (``GEMM``); ``add``: the residual adder (``ADD``).
* ``stream``: an elementwise unit with streams ``i`` (an element) and ``o`` (an element), one element
  per cycle after a fixed latency (``GELU``, ``SIGMOID``).
* ``row``: a row-buffering unit with a ``length`` port and ``o.payload.data`` (``SOFTMAX``).
* ``layernorm``: ``row`` plus a per-element ``params`` stream and per-tensor ``eps_q``/``mult``/``shift``.

At ``HwConfig.unit_lanes = U > 1`` the ``stream``, ``row``, ``layernorm`` and ``select`` units are built
with ``U`` lanes: each transfer of ``i``, ``o`` (and ``params``; the selector's ``tokens`` and ``o``)
carries ``U`` elements.
* ``select``: the token selector (``SELECT``).
* ``inner``: a block inside another unit (listed for generate, lint and the per-block split only; the
  GEMM engine's ``gemm_gelu`` lanes with ``fuse_gelu``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from amaranth.lib import wiring

from . import timing
from .config import HwConfig
from .isa import PER_TOKEN, TOKENS, Op

#: How the controller can drive a unit (see the module docstring).
KINDS = ("gemm", "add", "stream", "row", "layernorm", "select", "inner")
#: Instance path of the controller under ``encoder_top``.
CONTROLLER_PATH = "ctrl"


def _always(cfg: HwConfig) -> bool:
    return True


@dataclass(frozen=True)
class Unit:
    """One registered unit.

    Attributes:
        name: the block's name: its ``rtl generate`` file, its Verilator lint entry and its
            ``rtl report`` row (``report_name`` if that differs).
        build: ``build(cfg)`` makes the stand-alone block (a ``wiring.Component``).
        kind: one of :data:`KINDS`.
        op: the opcode it runs (``None`` for ``inner`` blocks).
        flag: the :class:`~vitforge.hw.config.HwConfig` field that builds it (``None``: always built).
        submodule: its submodule name in the controller (for ``inner`` blocks: its instance path under
            ``encoder_top``, or ``None`` for a block that stands alone only).
        cycles: ``cycles(cfg, instr, tokens, pruned)``: dispatch-to-dispatch cycles of one instruction
            with the token register at ``tokens`` (``pruned``: a ``SELECT`` that pruned any token).
        budget: ``budget(cfg, instr)``: a simple count of its work at the token maximum (the runtime
            multiplies it into a generous cycle budget).
        report_name: its row in ``rtl report``'s per-block split (default ``name``).
    """

    name: str
    build: Callable[[HwConfig], wiring.Component]
    kind: str
    op: int | None = None
    flag: str | None = None
    submodule: str | None = None
    cycles: Callable | None = None
    budget: Callable | None = None
    report_name: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unit {self.name!r}: kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if (self.op is None) != (self.kind == "inner"):
            raise ValueError(f"unit {self.name!r}: an opcode is given exactly when the kind is not 'inner'")
        if self.kind != "inner" and (self.cycles is None or self.budget is None or not self.submodule):
            raise ValueError(f"unit {self.name!r} runs opcode {self.op}: it needs cycles, budget and submodule")

    def enabled(self, cfg: HwConfig) -> bool:
        """Whether ``cfg`` builds this unit."""
        return True if self.flag is None else bool(getattr(cfg, self.flag))

    @property
    def path(self) -> str | None:
        """Its instance path under ``encoder_top`` (``None``: not part of it)."""
        return self.submodule if self.kind == "inner" else f"{CONTROLLER_PATH}.{self.submodule}"

    @property
    def row(self) -> str:
        """Its row in ``rtl report``'s per-block split."""
        return self.report_name or self.name


# --- cycle and budget functions of the kinds --------------------------------------------------------


def _max_dim(cfg: HwConfig, value: int) -> int:
    return cfg.max_tokens if value == TOKENS else value


def _gemm_cycles(cfg, ins, tokens, pruned):
    return timing.gemm_cycles(cfg, timing.dim(ins.m, tokens), timing.dim(ins.k, tokens), timing.dim(ins.n, tokens),
                              bool(ins.mean), bool(ins.b_act), bool(ins.gelu))


def _gemm_budget(cfg, ins):
    return -(-_max_dim(cfg, ins.m) // cfg.pe_rows) * -(-_max_dim(cfg, ins.n) // cfg.lanes) * (_max_dim(cfg, ins.k) + 64)


def _add_cycles(cfg, ins, tokens, pruned):
    return timing.add_cycles(cfg, timing.count(ins.count, tokens))


def words_budget(cfg: HwConfig, ins) -> int:
    """The budget of a word loop (``ADD``, ``LOAD``, ``STORE``): four cycles per beat of the widest word."""
    words = ins.count
    if words & PER_TOKEN:
        words = (words & (PER_TOKEN - 1)) * cfg.max_tokens
    return 4 * words * cfg.beats(cfg.param_word_bits)


def rowwise_budget(cfg: HwConfig, ins) -> int:
    """The budget of a row-wise instruction: three cycles per element and bubble."""
    return 3 * _max_dim(cfg, ins.rows) * (_max_dim(cfg, ins.cols) + 8)


def streaming(latency: int) -> Callable:
    """The ``cycles`` function of a ``stream`` unit of pipeline ``latency``."""
    def cycles(cfg, ins, tokens, pruned):
        return timing.streaming_cycles(cfg, timing.dim(ins.rows, tokens), timing.dim(ins.cols, tokens), latency)
    return cycles


def _softmax_cycles(cfg, ins, tokens, pruned):
    from .nonlinear import SoftmaxUnit

    cols, rows = timing.dim(ins.cols, tokens), timing.dim(ins.rows, tokens)
    if cfg.unit_lanes > 1:  # the rows overlap in the unit's pipeline
        return timing.softmax_cycles(cfg, rows, cols)
    return timing.buffering_cycles(cfg, rows, cols, SoftmaxUnit.latency(cols, cfg.unit_lanes), cfg.row_beats(cols))


def _layernorm_cycles(cfg, ins, tokens, pruned):
    from .nonlinear import LayerNormUnit

    cols, rows = timing.dim(ins.cols, tokens), timing.dim(ins.rows, tokens)
    if cfg.unit_lanes > 1 and rows > 0 and cols > 0:  # rows overlap in the unit
        return timing.layernorm_pipeline_cycles(cfg, rows, cols,
                                                **LayerNormUnit.pipeline_for(cfg.numerics, cfg.max_embed_dim))
    return timing.buffering_cycles(cfg, rows, cols,
                                   LayerNormUnit.latency_for(cfg.numerics, cfg.max_embed_dim, cols, cfg.unit_lanes),
                                   timing.layernorm_out_pass(cfg, cols))


def _select_cycles(cfg, ins, tokens, pruned):
    return timing.select_cycles(cfg, timing.dim(ins.n_tokens, tokens), ins.dim, pruned)


def _select_budget(cfg, ins):
    return 3 * _max_dim(cfg, ins.n_tokens) * (_max_dim(cfg, ins.dim) + 8)


# --- builders -----------------------------------------------------------------------------------------


def elementwise(make: Callable[[HwConfig], wiring.Component]) -> Callable[[HwConfig], wiring.Component]:
    """The builder of a ``stream`` unit: ``make(cfg)``, or ``cfg.unit_lanes`` copies of it in lock step."""
    from .nonlinear import ElementwiseLanes

    def build(cfg: HwConfig) -> wiring.Component:
        if cfg.unit_lanes == 1:
            return make(cfg)
        return ElementwiseLanes(make=lambda: make(cfg), lanes=cfg.unit_lanes)
    return build


def _builtin_units() -> list[Unit]:
    from .gemm import GeluDrain, GemmEngine, GemmSequencer, Requantizer
    from .nonlinear import GeluUnit, LayerNormUnit, SigmoidUnit, SoftmaxUnit
    from .residual import ResidualAdder
    from .selector import TokenMean, TokenSelector

    return [
        Unit("gemm_engine", lambda cfg: GemmEngine(config=cfg), "inner", submodule="ctrl.gemm.engine",
             report_name="gemm_array"),  # PE array, accumulators and drain registers
        Unit("requant", lambda cfg: Requantizer(lanes=cfg.lanes, acc_bits=cfg.acc_bits, mult_bits=cfg.mult_bits,
                                                shift_bits=cfg.shift_bits),
             "inner", submodule="ctrl.gemm.engine.requant"),
        # the GELU lanes of the drain path (GEMM.gelu)
        Unit("gemm_gelu", lambda cfg: GeluDrain(config=cfg), "inner", flag="fuse_gelu",
             submodule="ctrl.gemm.engine.gelu_lanes"),
        # operand feeder, tile loops, mean reciprocal divider
        Unit("gemm_sequencer", lambda cfg: GemmSequencer(config=cfg), "gemm", op=Op.GEMM, submodule="gemm",
             cycles=_gemm_cycles, budget=_gemm_budget),
        Unit("residual", lambda cfg: ResidualAdder(config=cfg), "add", op=Op.ADD, submodule="residual",
             cycles=_add_cycles, budget=words_budget),
        Unit("gelu", elementwise(lambda cfg: GeluUnit(numerics=cfg.numerics)), "stream", op=Op.GELU, flag="gelu",
             submodule="gelu", cycles=streaming(GeluUnit.latency), budget=rowwise_budget),
        Unit("sigmoid", elementwise(lambda cfg: SigmoidUnit(numerics=cfg.numerics)), "stream", op=Op.SIGMOID,
             flag="sigmoid", submodule="sigmoid", cycles=streaming(SigmoidUnit.latency), budget=rowwise_budget),
        Unit("softmax", lambda cfg: SoftmaxUnit(numerics=cfg.numerics, max_len=cfg.max_tokens, lanes=cfg.unit_lanes),
             "row", op=Op.SOFTMAX, flag="softmax", submodule="softmax", cycles=_softmax_cycles,
             budget=rowwise_budget),
        Unit("layernorm", lambda cfg: LayerNormUnit(numerics=cfg.numerics, max_dim=cfg.max_embed_dim,
                                                    lanes=cfg.unit_lanes), "layernorm",
             op=Op.LAYERNORM, flag="layernorm", submodule="layernorm", cycles=_layernorm_cycles,
             budget=rowwise_budget),
        Unit("selector", lambda cfg: TokenSelector(heads=cfg.max_heads, max_tokens=cfg.max_tokens,
                                                   max_dim=cfg.max_embed_dim, lanes=cfg.unit_lanes),
             "select", op=Op.SELECT,
             flag="selector", submodule="selector", cycles=_select_cycles, budget=_select_budget),
        # The selector's token mean as a stand-alone block (the program computes means on the GEMM engine).
        Unit("token_mean", lambda cfg: TokenMean(max_len=cfg.max_tokens), "inner", flag="selector"),
    ]


#: Every registered unit, by name, in registration order.
UNITS: dict[str, Unit] = {u.name: u for u in _builtin_units()}


def register(unit: Unit) -> Unit:
    """Add ``unit`` to :data:`UNITS`; its name and opcode must be new."""
    if unit.name in UNITS:
        raise ValueError(f"a unit called {unit.name!r} is registered already")
    if unit.op is not None and any(u.op == unit.op for u in UNITS.values()):
        raise ValueError(f"opcode {unit.op} is taken by unit {by_op(unit.op).name!r}")
    UNITS[unit.name] = unit
    return unit


def unregister(name: str) -> None:
    """Remove the unit called ``name`` (tests that register a toy unit)."""
    if name not in UNITS:
        raise ValueError(f"no unit called {name!r}; registered: {', '.join(UNITS)}")
    del UNITS[name]


@contextlib.contextmanager
def registered(unit: Unit) -> Iterator[Unit]:
    """``unit`` registered inside the ``with`` block only."""
    register(unit)
    try:
        yield unit
    finally:
        unregister(unit.name)


def enabled(cfg: HwConfig) -> list[Unit]:
    """The units ``cfg`` builds, in registration order."""
    return [u for u in UNITS.values() if u.enabled(cfg)]


def controlled(cfg: HwConfig) -> list[Unit]:
    """The units the controller of ``cfg`` runs (every enabled unit with an opcode)."""
    return [u for u in enabled(cfg) if u.op is not None]


def by_op(op: int) -> Unit:
    """The unit that runs opcode ``op``; ``KeyError`` naming the opcode if none does."""
    for u in UNITS.values():
        if u.op == op:
            return u
    raise KeyError(f"no unit runs opcode {op!r}")


__all__ = ["KINDS", "UNITS", "Unit", "by_op", "controlled", "elementwise", "enabled", "register", "registered",
           "rowwise_budget", "streaming", "unregister", "words_budget"]
