"""Nonlinear units: GELU, sigmoid, exp, row-wise softmax and LayerNorm (bit-exact to quant/).

Each unit is the hardware of one reference function in :mod:`vitforge.quant.nonlinear` and
computes it exactly; formats come from a :class:`~vitforge.quant.config.NumericsConfig` and the
constants (``LOG2E_Q``, ``SOFTMAX_RECIP_BITS``, ``LN_*``) and polynomial tables are imported
from quant/, never restated.

* :class:`GeluUnit`, :class:`SigmoidUnit`, :class:`ExpUnit`: elementwise, fully pipelined
  (one element per cycle), latency :attr:`latency`.
* :class:`SoftmaxUnit`, :class:`LayerNormUnit`: row-wise; a row of runtime length (``length``
  port, ``1..max_len``) is buffered, then streamed out with ``first``/``last`` markers.
* ``lanes`` (``HwConfig.unit_lanes``): :class:`ElementwiseLanes` runs ``lanes`` copies of an
  elementwise unit in lock step; ``SoftmaxUnit(lanes=U)`` and ``LayerNormUnit(lanes=U)`` take and give
  ``U`` elements per transfer (a row of ``n`` is ``ceil(n / U)`` transfers; the last one's lanes
  past ``n`` are ignored on input and don't-care on output): the max and the sums by trees over the
  lanes, ``U`` exp units and ``U`` normalizing lanes, one reciprocal (and square root) per row.
"""

from __future__ import annotations

from collections.abc import Callable

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.hdl import Shape
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from vitforge.quant.config import DEFAULT_NUMERICS, NumericsConfig
from vitforge.quant.fixed import REQUANT_MAX_SHIFT, REQUANT_MULT_BITS, FixedFormat, int_format
from vitforge.quant.nonlinear import (
    EXP_MAX_SHIFT,
    LN_NORM_FRAC,
    LN_RECIP_BITS,
    LN_SQRT_FRAC,
    LOG2E_FRAC,
    LOG2E_Q,
    SOFTMAX_RECIP_BITS,
    layernorm_sqrt_d,
)
from vitforge.quant.poly import COEF_FRAC
from vitforge.quant.poly_tables import EXP2_NEG, GELU_RESIDUAL, SIGMOID_POS

from .divider import Divider, Isqrt
from .poly_unit import PipelineRegister, PolyUnit, check_int, reject, round_shift, saturate

__all__ = ["LN_PIPE_COPIES", "LN_ROW_SLOTS", "LN_VAR_STAGES", "SOFTMAX_DIVIDERS", "SOFTMAX_E_SLOTS", "SOFTMAX_X_SLOTS",
           "ElementwiseLanes", "ExpUnit", "GeluUnit", "LayerNormUnit", "SigmoidUnit", "SoftmaxUnit", "lanes_shape",
           "row_layout", "tree"]


def fmt_shape(fmt: FixedFormat):
    """The Amaranth shape of one code of ``fmt``."""
    return signed(fmt.bits) if fmt.signed else unsigned(fmt.bits)


def lanes_shape(fmt: FixedFormat, lanes: int = 1):
    """One transfer of ``lanes`` codes of ``fmt``: the code's shape at 1, an array of them above."""
    return fmt_shape(fmt) if lanes == 1 else data.ArrayLayout(fmt_shape(fmt), lanes)


def row_layout(fmt: FixedFormat, lanes: int = 1) -> data.StructLayout:
    """Payload of a row-wise unit's output: ``{data, first, last}`` (``data``: :func:`lanes_shape`)."""
    return data.StructLayout({"data": lanes_shape(fmt, lanes), "first": 1, "last": 1})


def tree(values: list, op: Callable):
    """``values`` combined pairwise by ``op`` as a balanced tree (depth ``ceil(log2(len))``)."""
    values = list(values)
    if not values:
        raise ValueError("tree needs at least one value")
    while len(values) > 1:
        values = [op(values[i], values[i + 1]) if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


def _lane_valid(pos, lane: int, n):
    """Whether lane ``lane`` of a transfer whose first element is ``pos`` lies inside a row of ``n``."""
    return pos + lane < n


def _check_numerics(component, numerics) -> NumericsConfig:
    if not isinstance(numerics, NumericsConfig):
        raise reject(component, TypeError(f"numerics must be a NumericsConfig, not {type(numerics).__name__}"))
    return numerics


class _ElementwisePoly(wiring.Component):
    """An elementwise unit built as: combinational pre-step, :class:`PolyUnit`, post-step, register.

    Latency: ``PolyUnit.latency + 1`` cycles. Throughput: one element per cycle while ``o.ready``.
    """

    latency = PolyUnit.latency + PipelineRegister.latency

    def __init__(self, in_fmt: FixedFormat, out_fmt: FixedFormat):
        self._in_fmt, self._out_fmt = in_fmt, out_fmt
        super().__init__({
            "i": In(stream.Signature(fmt_shape(in_fmt))),
            "o": Out(stream.Signature(fmt_shape(out_fmt))),
        })

    @property
    def in_fmt(self) -> FixedFormat:
        return self._in_fmt

    @property
    def out_fmt(self) -> FixedFormat:
        return self._out_fmt

    # Subclasses: the polynomial, what goes in (a, tag) and how the result comes out.
    def _poly(self) -> PolyUnit:
        raise NotImplementedError

    def _pre(self, x):
        raise NotImplementedError

    def _post(self, y, tag):
        raise NotImplementedError

    def elaborate(self, platform):
        m = Module()
        m.submodules.poly = poly = self._poly()
        m.submodules.out = out = PipelineRegister(fmt_shape(self._out_fmt))
        wiring.connect(m, out.o, wiring.flipped(self.o))

        a, tag = self._pre(self.i.payload)
        m.d.comb += [
            poly.i.valid.eq(self.i.valid),
            poly.i.payload.a.eq(a),
            poly.i.payload.tag.eq(tag),
            self.i.ready.eq(poly.i.ready),
            out.i.valid.eq(poly.o.valid),
            out.i.payload.eq(self._post(poly.o.payload.y, poly.o.payload.tag)),
            poly.o.ready.eq(out.i.ready),
        ]
        return m


class GeluUnit(_ElementwisePoly):
    """GELU unit: :func:`vitforge.quant.nonlinear.int_gelu` on ``numerics.gelu_in/gelu_out``.

    Ports: ``i``: stream of ``gelu_in`` codes; ``o``: stream of ``gelu_out`` codes (saturated).
    Latency :attr:`latency`; one element per cycle.
    """

    def __init__(self, *, numerics: NumericsConfig = DEFAULT_NUMERICS):
        numerics = _check_numerics(self, numerics)
        super().__init__(numerics.gelu_in, numerics.gelu_out)

    def _poly(self):
        return PolyUnit(poly=GELU_RESIDUAL, in_frac=self.in_fmt.frac, in_width=self.in_fmt.bits,
                        tag_shape=fmt_shape(self.in_fmt))

    def _pre(self, x):
        return abs(x), x

    def _post(self, g, x):
        relu = Mux(x < 0, 0, x) << (COEF_FRAC - self.in_fmt.frac)
        return saturate(round_shift(relu - g, COEF_FRAC - self.out_fmt.frac), self.out_fmt)


class SigmoidUnit(_ElementwisePoly):
    """Sigmoid unit: :func:`vitforge.quant.nonlinear.int_sigmoid` on ``numerics.sigmoid_in/out``.

    Ports: ``i``: stream of ``sigmoid_in`` codes; ``o``: stream of unsigned ``sigmoid_out``
    codes (1.0 saturates to the largest code). Latency :attr:`latency`; one element per cycle.
    """

    def __init__(self, *, numerics: NumericsConfig = DEFAULT_NUMERICS):
        numerics = _check_numerics(self, numerics)
        super().__init__(numerics.sigmoid_in, numerics.sigmoid_out)

    def _poly(self):
        return PolyUnit(poly=SIGMOID_POS, in_frac=self.in_fmt.frac, in_width=self.in_fmt.bits,
                        tag_shape=unsigned(1))

    def _pre(self, x):
        return abs(x), x < 0

    def _post(self, s, negative):
        y = Mux(negative, (1 << COEF_FRAC) - s, s)
        return saturate(round_shift(y, COEF_FRAC - self.out_fmt.frac), self.out_fmt)


class ExpUnit(_ElementwisePoly):
    """exp unit for ``d <= 0``: :func:`vitforge.quant.nonlinear.int_exp`.

    Args (keyword-only):
        in_fmt: signed format of ``d`` (softmax uses ``softmax_in`` with one more bit).
        out_fmt: unsigned output format (``numerics.exp_out``).

    Ports: ``i``: stream of ``in_fmt`` codes, which must be ``<= 0`` (a positive input is outside
    the contract; its output is unspecified); ``o``: stream of ``out_fmt`` codes.
    Latency :attr:`latency`; one element per cycle.
    """

    def __init__(self, *, in_fmt: FixedFormat, out_fmt: FixedFormat):
        for name, fmt in (("in_fmt", in_fmt), ("out_fmt", out_fmt)):
            if not isinstance(fmt, FixedFormat):
                raise reject(self, TypeError(f"{name} must be a FixedFormat, not {type(fmt).__name__}"))
        if not in_fmt.signed or out_fmt.signed or out_fmt.frac > COEF_FRAC:
            raise reject(self, ValueError(
                f"exp unit needs a signed input and an unsigned output with at most {COEF_FRAC} "
                f"fractional bits, not {in_fmt} -> {out_fmt}"))
        super().__init__(in_fmt, out_fmt)

    def _poly(self):
        return PolyUnit(poly=EXP2_NEG, in_frac=LOG2E_FRAC, in_width=LOG2E_FRAC, tag_shape=self._z_shape())

    def _z_shape(self):
        # u = -d * LOG2E_Q, z = u >> (in_frac + LOG2E_FRAC)
        u_max = (1 << (self.in_fmt.bits - 1)) * LOG2E_Q
        return unsigned((u_max >> (self.in_fmt.frac + LOG2E_FRAC)).bit_length() or 1)

    def _pre(self, d):
        neg = (-d)[: self.in_fmt.bits]  # -d >= 0 fits in_fmt.bits unsigned
        u = neg * LOG2E_Q
        z = u >> (self.in_fmt.frac + LOG2E_FRAC)
        f = (u >> self.in_fmt.frac)[:LOG2E_FRAC]
        return f, z

    def _post(self, p, z):
        total = z + (COEF_FRAC - self.out_fmt.frac)
        shift = Mux(total > EXP_MAX_SHIFT, EXP_MAX_SHIFT, total)[: EXP_MAX_SHIFT.bit_length()]
        return saturate(round_shift(p, shift), self.out_fmt)


class ElementwiseLanes(wiring.Component):
    """``lanes`` copies of an elementwise unit (:class:`GeluUnit`, :class:`SigmoidUnit`,
    :class:`ExpUnit`) in lock step: the same integer algorithm on every lane.

    Args (keyword-only):
        make: ``make()`` builds one copy (every call the same unit).
        lanes: copies, ``>= 1``.

    Ports: ``i``: stream of ``lanes`` input codes (:func:`lanes_shape`); ``o``: stream of ``lanes``
    output codes. Latency :attr:`latency` (the copy's); ``lanes`` elements per cycle.
    """

    latency = _ElementwisePoly.latency

    def __init__(self, *, make: Callable[[], _ElementwisePoly], lanes: int):
        check_int(self, "lanes", lanes, 1)
        self._make, self._lanes = make, lanes
        probe = make()
        probe._MustUse__silence = True
        self._in_fmt, self._out_fmt = probe.in_fmt, probe.out_fmt
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(fmt_shape(self._in_fmt), lanes))),
            "o": Out(stream.Signature(data.ArrayLayout(fmt_shape(self._out_fmt), lanes))),
        })

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def in_fmt(self) -> FixedFormat:
        return self._in_fmt

    @property
    def out_fmt(self) -> FixedFormat:
        return self._out_fmt

    def elaborate(self, platform):
        m = Module()
        copies = []
        for j in range(self._lanes):
            m.submodules[f"lane{j}"] = unit = self._make()
            copies.append(unit)
            m.d.comb += [unit.i.valid.eq(self.i.valid), unit.i.payload.eq(self.i.payload[j]),
                         unit.o.ready.eq(self.o.ready), self.o.payload[j].eq(unit.o.payload)]
        # Identical pipelines under identical control: lane 0 speaks for all.
        m.d.comb += [self.i.ready.eq(copies[0].i.ready), self.o.valid.eq(copies[0].o.valid)]
        return m


#: ``SoftmaxUnit(lanes > 1)``: its input buffers (rows loaded, waiting for the exp pass), its exp
#: buffers (rows from the exp pass to the end of their output) and its reciprocal dividers (taken in
#: turn by row, so a division is started every ``(Divider latency + 1) / SOFTMAX_DIVIDERS`` cycles).
SOFTMAX_X_SLOTS = 2
SOFTMAX_E_SLOTS = 4
SOFTMAX_DIVIDERS = 2


class SoftmaxUnit(wiring.Component):
    """Row-wise softmax unit: :func:`vitforge.quant.nonlinear.int_softmax`, exact.

    Args (keyword-only):
        numerics: formats ``softmax_in``, ``softmax_out``, ``exp_out``.
        max_len: the longest row (buffer depth), ``>= 1``.

    Ports:
        length: ``In(range(max_len + 1))``, the row length ``1..max_len``; sampled when the row's
            first element is accepted (0 or more than ``max_len`` is outside the contract).
        i: stream of ``softmax_in`` codes, one row after another.
        o: stream of :func:`row_layout` ``(softmax_out)``: probabilities with ``first``/``last``.

    Passes per row: load (``n`` cycles, tracking the max), exp + sum (``n + ExpUnit.latency``),
    one reciprocal ``floor(2**SOFTMAX_RECIP_BITS / sum)`` (:class:`Divider`), normalize
    (``n`` cycles, saturating). At ``lanes == 1`` a row is accepted only after the previous one has
    left; at ``lanes > 1`` the passes of successive rows overlap (see :meth:`_elaborate_lanes`;
    :func:`vitforge.hw.timing.softmax_row_schedule` gives the cycles). :meth:`latency`: the cycles
    from the last input of a row to its first output when the unit is otherwise empty.
    """

    def __init__(self, *, numerics: NumericsConfig = DEFAULT_NUMERICS, max_len: int, lanes: int = 1):
        numerics = _check_numerics(self, numerics)
        check_int(self, "max_len", max_len, 1)
        check_int(self, "lanes", lanes, 1)
        self._numerics, self._max_len, self._lanes = numerics, max_len, lanes
        super().__init__({
            "length": In(range(max_len + 1)),
            "i": In(stream.Signature(lanes_shape(numerics.softmax_in, lanes))),
            "o": Out(stream.Signature(row_layout(numerics.softmax_out, lanes))),
        })

    @property
    def max_len(self) -> int:
        return self._max_len

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def numerics(self) -> NumericsConfig:
        return self._numerics

    def _d_fmt(self) -> FixedFormat:
        fin = self._numerics.softmax_in
        return FixedFormat(fin.bits + 1, fin.frac)

    def _sum_width(self) -> int:
        return (self._max_len * self._numerics.exp_out.qmax).bit_length()

    @staticmethod
    def latency(n: int, lanes: int = 1) -> int:
        """Cycles from accepting a row's last input to its first output being valid (``o.ready`` high),
        for a row of ``n`` elements on a unit of ``lanes`` lanes."""
        exp_pass = -(-n // lanes) + 1 + ExpUnit.latency  # one memory read ahead of the exp pipeline
        divide = 1 + (SOFTMAX_RECIP_BITS + 1) + 1  # hand-off, one quotient bit per cycle, result
        start = 1 if lanes > 1 else 0  # lanes > 1: the exp stage sees the loaded row a cycle later
        return start + exp_pass + divide + 1 + PipelineRegister.latency  # first read of e, output register

    def elaborate(self, platform):
        if self._lanes > 1:
            return self._elaborate_lanes()
        m = Module()
        num = self._numerics
        fin, fexp, fout = num.softmax_in, num.exp_out, num.softmax_out
        word = max(fin.bits, fexp.bits)

        m.submodules.mem = mem = Memory(shape=unsigned(word), depth=self._max_len, init=[])
        wp, rp = mem.write_port(), mem.read_port(transparent_for=())
        m.submodules.exp = exp = ExpUnit(in_fmt=self._d_fmt(), out_fmt=fexp)
        m.submodules.div = div = Divider(dividend_width=SOFTMAX_RECIP_BITS + 1, divisor_width=self._sum_width())
        m.submodules.out = out = PipelineRegister(row_layout(fout))
        wiring.connect(m, out.o, wiring.flipped(self.o))

        n = Signal(range(self._max_len + 1))
        xmax = Signal(fmt_shape(fin))
        rd = Signal(range(self._max_len + 1))  # exp pass: next address to read
        rd_valid = Signal()  # exp pass: the read port holds element rd - 1
        idx = Signal(range(self._max_len + 1))  # load / exp-result / normalize index
        total = Signal(self._sum_width())
        recip = Signal(SOFTMAX_RECIP_BITS + 1)

        m.d.comb += [exp.o.ready.eq(1), div.o.ready.eq(1), rp.addr.eq(0)]
        m.d.comb += [div.i.payload.dividend.eq(1 << SOFTMAX_RECIP_BITS), div.i.payload.divisor.eq(total)]

        with m.FSM():
            with m.State("LOAD"):
                n_row = Mux(idx == 0, self.length, n)
                m.d.comb += [self.i.ready.eq(1), wp.addr.eq(idx), wp.data.eq(self.i.payload),
                             wp.en.eq(self.i.valid)]
                with m.If(self.i.valid):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == 0):
                        m.d.sync += [n.eq(self.length), xmax.eq(self.i.payload)]
                    with m.Elif(self.i.payload > xmax):
                        m.d.sync += xmax.eq(self.i.payload)
                    with m.If(idx + 1 >= n_row):
                        m.d.sync += [idx.eq(0), rd.eq(0), rd_valid.eq(0), total.eq(0)]
                        m.next = "EXP"
            with m.State("EXP"):
                # Read x[rd]; one cycle later it feeds the exp unit (always ready: its output is
                # always taken). Results come back in order and overwrite x[idx], idx < rd.
                m.d.comb += [rp.addr.eq(rd), exp.i.valid.eq(rd_valid),
                             exp.i.payload.eq(rp.data[: fin.bits].as_signed() - xmax)]
                m.d.sync += rd_valid.eq(rd < n)
                with m.If(rd < n):
                    m.d.sync += rd.eq(rd + 1)
                m.d.comb += [wp.addr.eq(idx), wp.data.eq(exp.o.payload), wp.en.eq(exp.o.valid)]
                with m.If(exp.o.valid):
                    m.d.sync += [total.eq(total + exp.o.payload), idx.eq(idx + 1)]
                    with m.If(idx + 1 == n):
                        m.next = "DIVIDE"
            with m.State("DIVIDE"):
                m.d.comb += div.i.valid.eq(1)
                with m.If(div.i.ready):
                    m.next = "RECIP"
            with m.State("RECIP"):
                with m.If(div.o.valid):
                    m.d.sync += [recip.eq(div.o.payload.quotient), idx.eq(0)]
                    m.next = "NORMALIZE"
            with m.State("NORMALIZE"):
                # The read port holds e[idx]: the address runs one step ahead on each transfer.
                step = out.i.ready
                m.d.comb += rp.addr.eq(Mux(step, idx + 1, idx))
                e = rp.data[: fexp.bits]
                m.d.comb += [
                    out.i.valid.eq(1),
                    out.i.payload.data.eq(
                        saturate(round_shift(e * recip, SOFTMAX_RECIP_BITS - fout.frac), fout)),
                    out.i.payload.first.eq(idx == 0),
                    out.i.payload.last.eq(idx + 1 == n),
                ]
                with m.If(step):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx + 1 == n):
                        m.d.sync += idx.eq(0)
                        m.next = "LOAD"
        return m


    def _elaborate_lanes(self):
        """``lanes`` elements per transfer, the rows pipelined over four stages that run at once.

        * load (A): takes a row into one of :data:`SOFTMAX_X_SLOTS` input buffers, tracking the max;
        * exp + sum (B): reads the oldest loaded row, writes its exps into one of
          :data:`SOFTMAX_E_SLOTS` exp buffers, sums them, then hands the sum to the row's divider
          (:data:`SOFTMAX_DIVIDERS` instances of :class:`Divider`, taken in turn by row);
        * normalize (C): takes the oldest row's reciprocal from its divider and streams it out.

        Each stage waits only for the buffers it needs; :func:`vitforge.hw.timing.softmax_row_schedule`
        follows it cycle for cycle (back-to-back input, ``o.ready`` high).
        """
        m = Module()
        num, u = self._numerics, self._lanes
        fin, fexp, fout = num.softmax_in, num.exp_out, num.softmax_out
        depth = -(-self._max_len // u)
        abits = max(1, (depth - 1).bit_length())  # word address inside a slot (slots are 2**abits apart)
        n_shape = range(self._max_len + u)
        nx, ne, nd = SOFTMAX_X_SLOTS, SOFTMAX_E_SLOTS, SOFTMAX_DIVIDERS

        m.submodules.xmem = xmem = Memory(shape=unsigned(fin.bits * u), depth=nx << abits, init=[])
        m.submodules.emem = emem = Memory(shape=unsigned(fexp.bits * u), depth=ne << abits, init=[])
        xwp, xrp = xmem.write_port(), xmem.read_port(transparent_for=())
        ewp, erp = emem.write_port(), emem.read_port(transparent_for=())
        exps = []
        for j in range(u):
            m.submodules[f"exp{j}"] = exp = ExpUnit(in_fmt=self._d_fmt(), out_fmt=fexp)
            exps.append(exp)
            m.d.comb += exp.o.ready.eq(1)
        divs = []
        for k in range(nd):
            m.submodules[f"div{k}"] = div = Divider(dividend_width=SOFTMAX_RECIP_BITS + 1,
                                                    divisor_width=self._sum_width())
            divs.append(div)
            m.d.comb += div.i.payload.dividend.eq(1 << SOFTMAX_RECIP_BITS)
        m.submodules.out = out = PipelineRegister(row_layout(fout, u))
        wiring.connect(m, out.o, wiring.flipped(self.o))

        # --- A: load ---------------------------------------------------------------------------------
        xfull = Signal(nx)  # input buffer s holds a loaded row not yet read by B
        x_n = Array(Signal(n_shape, name=f"x_n{s}") for s in range(nx))
        x_max = Array(Signal(fmt_shape(fin), name=f"x_max{s}") for s in range(nx))
        a_s = Signal(range(nx))
        a_idx = Signal(range(depth + 1))
        a_pos = Signal(n_shape)
        a_n = Signal(n_shape)
        a_max = Signal(fmt_shape(fin))
        x_set = Signal(nx)
        x_clr = Signal(nx)
        m.d.sync += xfull.eq((xfull | x_set) & ~x_clr)

        n_row = Mux(a_idx == 0, self.length, a_n)
        xs = [self.i.payload[j] for j in range(u)]
        # Lanes past the row's end take the smallest code: they never win the max.
        masked = [Mux(_lane_valid(a_pos, j, n_row), x, fin.qmin) for j, x in enumerate(xs)]
        beat_max = tree(masked, lambda a, b: Mux(b > a, b, a))
        row_max = Mux((a_idx == 0) | (beat_max > a_max), beat_max, a_max)
        take = self.i.valid & self.i.ready
        m.d.comb += [self.i.ready.eq(~xfull.bit_select(a_s, 1)), xwp.addr.eq(Cat(a_idx[:abits], a_s)),
                     xwp.en.eq(take),
                     xwp.data.eq(Cat(*(x.as_unsigned()[: fin.bits] for x in xs)))]
        with m.If(take):
            m.d.sync += [a_idx.eq(a_idx + 1), a_pos.eq(a_pos + u), a_max.eq(row_max)]
            with m.If(a_idx == 0):
                m.d.sync += a_n.eq(self.length)
            with m.If(a_pos + u >= n_row):
                m.d.comb += x_set.eq(1 << a_s)
                m.d.sync += [a_idx.eq(0), a_pos.eq(0), x_n[a_s].eq(n_row), x_max[a_s].eq(row_max),
                             a_s.eq(Mux(a_s == nx - 1, 0, a_s + 1))]

        # --- B: exp + sum, then the row's divider ---------------------------------------------------
        b_s = Signal(range(nx))  # the input buffer B reads next
        e_w = Signal(range(ne))  # the exp buffer B writes next
        e_count = Signal(range(ne + 1))  # exp buffers held (B started, C not finished)
        e_inc, e_dec = Signal(), Signal()
        m.d.sync += e_count.eq(e_count + e_inc - e_dec)
        e_n = Array(Signal(n_shape, name=f"e_n{s}") for s in range(ne))
        b_k = Signal(range(nd))  # the divider of B's row
        b_n = Signal(n_shape)
        b_max = Signal(fmt_shape(fin))
        rd = Signal(range(depth + 1))  # next word to read
        rd_valid = Signal()  # the read port holds word rd - 1
        b_idx = Signal(range(depth + 1))  # the next exp result's word
        b_pos = Signal(n_shape)
        total = Signal(self._sum_width())

        m.d.comb += xrp.addr.eq(Cat(rd[:abits], b_s))
        for div in divs:
            m.d.comb += div.i.payload.divisor.eq(total)
        with m.FSM(name="exp_fsm"):
            with m.State("IDLE"):
                with m.If(xfull.bit_select(b_s, 1) & (e_count < ne)):
                    m.d.comb += e_inc.eq(1)
                    m.d.sync += [b_n.eq(x_n[b_s]), b_max.eq(x_max[b_s]), e_n[e_w].eq(x_n[b_s]), rd.eq(0),
                                 rd_valid.eq(0), b_idx.eq(0), b_pos.eq(0), total.eq(0)]
                    m.next = "RUN"
            with m.State("RUN"):
                # Read word rd; one cycle later its lanes feed the exp units (always ready). Results
                # come back in order into word b_idx of the exp buffer; lanes past the row are not summed.
                words = (b_n + (u - 1)) // u
                for exp, x in zip(exps, [xrp.data.word_select(j, fin.bits) for j in range(u)], strict=True):
                    m.d.comb += [exp.i.valid.eq(rd_valid), exp.i.payload.eq(x.as_signed() - b_max)]
                m.d.sync += rd_valid.eq(rd < words)
                with m.If(rd < words):
                    m.d.sync += rd.eq(rd + 1)
                es = [exp.o.payload for exp in exps]
                beat_sum = tree([Mux(_lane_valid(b_pos, j, b_n), e, 0) for j, e in enumerate(es)], lambda a, b: a + b)
                m.d.comb += [ewp.addr.eq(Cat(b_idx[:abits], e_w)), ewp.en.eq(exps[0].o.valid),
                             ewp.data.eq(Cat(*(e.as_unsigned()[: fexp.bits] for e in es)))]
                with m.If(exps[0].o.valid):
                    m.d.sync += [total.eq(total + beat_sum), b_idx.eq(b_idx + 1), b_pos.eq(b_pos + u)]
                    with m.If(b_pos + u >= b_n):
                        m.d.comb += x_clr.eq(1 << b_s)
                        m.d.sync += [b_s.eq(Mux(b_s == nx - 1, 0, b_s + 1)), e_w.eq(Mux(e_w == ne - 1, 0, e_w + 1))]
                        m.next = "DIVIDE"
            with m.State("DIVIDE"):
                for k, div in enumerate(divs):
                    m.d.comb += div.i.valid.eq(b_k == k)
                with m.If(Array(div.i.ready for div in divs)[b_k]):
                    m.d.sync += b_k.eq(Mux(b_k == nd - 1, 0, b_k + 1))
                    m.next = "IDLE"

        # --- C: normalize and output ----------------------------------------------------------------
        c_s = Signal(range(ne))  # the exp buffer C reads
        c_k = Signal(range(nd))
        c_idx = Signal(range(depth + 1))
        c_pos = Signal(n_shape)
        c_n = Signal(n_shape)
        recip = Signal(SOFTMAX_RECIP_BITS + 1)
        m.d.comb += erp.addr.eq(Cat(c_idx[:abits], c_s))
        with m.FSM(name="norm_fsm"):
            with m.State("IDLE"):
                # Word 0 of the row is on the read port by the time RUN starts.
                m.d.comb += erp.addr.eq(Cat(Const(0, abits), c_s))
                for k, div in enumerate(divs):
                    m.d.comb += div.o.ready.eq(c_k == k)
                with m.If(Array(div.o.valid for div in divs)[c_k]):
                    m.d.sync += [recip.eq(Array(div.o.payload.quotient for div in divs)[c_k]), c_n.eq(e_n[c_s]),
                                 c_idx.eq(0), c_pos.eq(0), c_k.eq(Mux(c_k == nd - 1, 0, c_k + 1))]
                    m.next = "RUN"
            with m.State("RUN"):
                # The read port holds word c_idx: the address runs one step ahead on each transfer.
                step = out.i.ready
                m.d.comb += erp.addr.eq(Cat(Mux(step, c_idx + 1, c_idx)[:abits], c_s))
                for j in range(u):
                    e = erp.data.word_select(j, fexp.bits)
                    m.d.comb += out.i.payload.data[j].eq(
                        saturate(round_shift(e * recip, SOFTMAX_RECIP_BITS - fout.frac), fout))
                m.d.comb += [out.i.valid.eq(1), out.i.payload.first.eq(c_idx == 0),
                             out.i.payload.last.eq(c_pos + u >= c_n)]
                with m.If(step):
                    m.d.sync += [c_idx.eq(c_idx + 1), c_pos.eq(c_pos + u)]
                    with m.If(c_pos + u >= c_n):
                        m.d.comb += e_dec.eq(1)
                        m.d.sync += c_s.eq(Mux(c_s == ne - 1, 0, c_s + 1))
                        m.next = "IDLE"
        return m


class _RowRoundRobin(wiring.Component):
    """``copies`` instances of a one-at-a-time stream block (``make()``: ``i``/``o`` streams, an input
    taken only while idle, the output held until taken), given rows in turn, with a tag carried beside.

    Ports: ``i``: stream of ``{data: in_shape, tag}``; ``o``: stream of ``{data: out_shape, tag}``, in
    the order of ``i``. Row ``r`` goes to instance ``r mod copies`` when it is idle and leaves when
    it is done and the rows before it have left (no cycle added on either side).
    """

    def __init__(self, make: Callable[[], wiring.Component], copies: int, in_shape, out_shape, tag_shape):
        check_int(self, "copies", copies, 1)
        self._make, self._copies, self._tag = make, copies, tag_shape
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({"data": in_shape, "tag": tag_shape}))),
            "o": Out(stream.Signature(data.StructLayout({"data": out_shape, "tag": tag_shape}))),
        })

    def elaborate(self, platform):
        m = Module()
        blocks = []
        for k in range(self._copies):
            blk = self._make()
            m.submodules[f"copy{k}"] = blk
            blocks.append(blk)
        tags = [Signal(self._tag, name=f"tag{k}") for k in range(self._copies)]
        p_in, p_out = Signal(range(self._copies)), Signal(range(self._copies))
        last = self._copies - 1
        for k, blk in enumerate(blocks):
            here_in, here_out = p_in == k, p_out == k
            m.d.comb += [blk.i.valid.eq(self.i.valid & here_in), blk.i.payload.eq(self.i.payload.data),
                         blk.o.ready.eq(self.o.ready & here_out)]
            with m.If(here_in):
                m.d.comb += self.i.ready.eq(blk.i.ready)
                with m.If(self.i.valid & blk.i.ready):
                    m.d.sync += [tags[k].eq(self.i.payload.tag), p_in.eq(0 if k == last else k + 1)]
            with m.If(here_out):
                m.d.comb += [self.o.valid.eq(blk.o.valid), self.o.payload.data.eq(blk.o.payload),
                             self.o.payload.tag.eq(tags[k])]
                with m.If(self.o.ready & blk.o.valid):
                    m.d.sync += p_out.eq(0 if k == last else k + 1)
        return m


#: Width of LayerNorm's beta codes (int32, like a GEMM bias).
LN_BETA_BITS = 32
#: LayerNorm at ``lanes > 1``: square roots and reciprocal dividers, taking rows in turn (two keep the
#: divider's period, ``(LN_RECIP_BITS + 3) / 2`` cycles a row, under a row of 192 at 8 lanes).
LN_PIPE_COPIES = 2
#: LayerNorm at ``lanes > 1``: row slots in the buffer (a row holds its slot from its first input to its
#: last output: at the divider's period, about two load passes and the square root and reciprocal).
LN_ROW_SLOTS = 6
#: LayerNorm at ``lanes > 1``: one-row registers from the load to the square root (``T1..T4``).
LN_VAR_STAGES = 4


class LayerNormUnit(wiring.Component):
    """Row-wise LayerNorm unit: :func:`vitforge.quant.nonlinear.int_layernorm`, exact.

    Args (keyword-only):
        numerics: ``act_bits`` gives the input and output code width (int8 codes, any scale).
        max_dim: the longest row ``D`` (buffer depth and the ``sqrt(D)`` constant ROM), ``>= 1``.

    Ports:
        length: ``In(range(max_dim + 1))``, the row length ``D`` in ``1..max_dim``; sampled with
            the row's first element.
        eps_q: epsilon in variance units (see ``int_layernorm_normalize``), stable during a row.
        mult, shift: per-tensor requantization (``REQUANT_MULT_BITS``-bit multiplier, shift
            ``0..REQUANT_MAX_SHIFT``), stable during a row. Per-channel requantization is not
            supported by this unit.
        i: stream of ``act_bits`` input codes, one row after another.
        params: stream of ``{gamma: int8, beta: int32}``, one per output element, in order.
        o: stream of :func:`row_layout` (``act_bits``-bit codes, saturated) with ``first``/``last``.

    Passes per row at ``lanes == 1``: load with the sum (``D`` cycles), ``V = sum(c**2)``
    (``D + 1``), isqrt and one reciprocal (:class:`Isqrt`, :class:`Divider`), then one output per
    cycle while ``params`` is valid and ``o`` is ready. A row is accepted only after the previous
    one has left; :meth:`latency` gives the cycles from a row's last input to its first output.

    At ``lanes > 1`` rows overlap: a row is loaded (``sum(x)`` and ``sum(x**2)``, one transfer per
    cycle) while the rows before it are in the variance registers, the square roots, the
    reciprocals (:data:`LN_PIPE_COPIES` of each, by row in turn) or the output pass, in up to
    :data:`LN_ROW_SLOTS` row slots; ``V = n (n sum(x**2) - sum(x)**2)`` equals ``sum(c**2)``, so the
    result is the same integer for integer. ``length`` is sampled with each row's first transfer;
    ``eps_q``, ``mult`` and ``shift`` must then stay stable while any row is in the unit. The cycles
    of each row: :func:`vitforge.hw.timing.layernorm_pipeline_times` with :meth:`pipeline_for`.
    """

    def __init__(self, *, numerics: NumericsConfig = DEFAULT_NUMERICS, max_dim: int, lanes: int = 1):
        numerics = _check_numerics(self, numerics)
        check_int(self, "max_dim", max_dim, 1)
        check_int(self, "lanes", lanes, 1)
        self._numerics, self._max_dim, self._lanes = numerics, max_dim, lanes
        self._fmt = int_format(numerics.act_bits)
        param = data.StructLayout({"gamma": signed(numerics.weight_bits), "beta": signed(LN_BETA_BITS)})
        super().__init__({
            "length": In(range(max_dim + 1)),
            "eps_q": In(self.var_width),
            "mult": In(REQUANT_MULT_BITS),
            "shift": In(range(REQUANT_MAX_SHIFT + 1)),
            "i": In(stream.Signature(lanes_shape(self._fmt, lanes))),
            "params": In(stream.Signature(param if lanes == 1 else data.ArrayLayout(param, lanes))),
            "o": Out(stream.Signature(row_layout(self._fmt, lanes))),
        })

    @property
    def max_dim(self) -> int:
        return self._max_dim

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def c_max(self) -> int:
        """Largest ``|D x - sum(x)|``."""
        return self._max_dim * (self._fmt.qmax - self._fmt.qmin)

    @property
    def var_width(self) -> int:
        """Width of ``V = sum(c**2)`` and of the ``eps_q`` port."""
        return self.var_width_for(self._numerics, self._max_dim)

    @staticmethod
    def var_width_for(numerics: NumericsConfig, max_dim: int) -> int:
        """:attr:`var_width` of a unit for ``numerics`` and ``max_dim`` (no elaboration needed)."""
        fmt = int_format(numerics.act_bits)
        return (max_dim * (max_dim * (fmt.qmax - fmt.qmin)) ** 2).bit_length()

    def latency(self, n: int) -> int:
        """Cycles from accepting a row's last input to its first output being valid."""
        return self.latency_for(self._numerics, self._max_dim, n, self._lanes)

    @staticmethod
    def latency_for(numerics: NumericsConfig, max_dim: int, n: int, lanes: int = 1) -> int:
        """:meth:`latency` of a unit for ``numerics``, ``max_dim`` and ``lanes`` on rows of ``n`` (no
        elaboration); at ``lanes > 1``, of a row that finds the unit empty."""
        sqrt_width = LayerNormUnit.var_width_for(numerics, max_dim) + 1
        sqrt = Isqrt.latency_for(sqrt_width)
        div = Divider.latency_for(LN_RECIP_BITS + 1)
        if lanes > 1:
            from .timing import layernorm_pipeline_times

            pipe = LayerNormUnit.pipeline_for(numerics, max_dim)
            out_latency = pipe.pop("out_latency")
            beats = -(-n // lanes)
            first, _ = layernorm_pipeline_times([beats], **pipe)[0]
            return first - (beats - 1) + out_latency
        return (-(-n // lanes) + 2) + (sqrt + 1) + (div + 1) + 1 + PipelineRegister.latency

    @staticmethod
    def pipeline_for(numerics: NumericsConfig, max_dim: int) -> dict[str, int]:
        """The stages of a unit at ``lanes > 1`` as :func:`vitforge.hw.timing.layernorm_pipeline_cycles`
        takes them: ``var_stages``, ``sqrt_latency``, ``div_latency``, ``copies``, ``slots``,
        ``out_latency`` (no elaboration)."""
        return {"var_stages": LN_VAR_STAGES,
                "sqrt_latency": Isqrt.latency_for(LayerNormUnit.var_width_for(numerics, max_dim) + 1),
                "div_latency": Divider.latency_for(LN_RECIP_BITS + 1), "copies": LN_PIPE_COPIES,
                "slots": LN_ROW_SLOTS, "out_latency": PipelineRegister.latency}

    def elaborate(self, platform):
        if self._lanes > 1:
            return self._elaborate_lanes()
        m = Module()
        fmt, dmax = self._fmt, self._max_dim
        n_shape = range(dmax + 1)

        m.submodules.mem = mem = Memory(shape=fmt_shape(fmt), depth=dmax, init=[])
        wp, rp = mem.write_port(), mem.read_port(transparent_for=())
        sqrt_d = [0] + [layernorm_sqrt_d(d) for d in range(1, dmax + 1)]
        m.submodules.sqrt_d = sqrt_rom = Memory(shape=unsigned(max(sqrt_d).bit_length()), depth=dmax + 1,
                                                init=sqrt_d)
        sqrt_rp = sqrt_rom.read_port(transparent_for=())
        m.submodules.isqrt = isqrt = Isqrt(width=self.var_width + 1)
        m.submodules.div = div = Divider(dividend_width=LN_RECIP_BITS + 1, divisor_width=isqrt.result_width)
        m.submodules.out = out = PipelineRegister(row_layout(fmt))
        wiring.connect(m, out.o, wiring.flipped(self.o))

        n = Signal(n_shape)
        total = Signal(signed((dmax * -fmt.qmin).bit_length() + 1))
        var = Signal(self.var_width)
        rd = Signal(n_shape)
        rd_valid = Signal()
        idx = Signal(n_shape)
        s = Signal(isqrt.result_width)
        g = Signal(LN_RECIP_BITS + 1 + sqrt_rp.data.shape().width)

        x = rp.data
        c = n * x - total  # D x - sum(x), exact
        m.d.comb += [rp.addr.eq(0), sqrt_rp.addr.eq(n), isqrt.o.ready.eq(1), div.o.ready.eq(1),
                     isqrt.i.payload.eq(var + self.eps_q),
                     div.i.payload.dividend.eq(1 << LN_RECIP_BITS), div.i.payload.divisor.eq(s)]

        with m.FSM():
            with m.State("LOAD"):
                n_row = Mux(idx == 0, self.length, n)
                m.d.comb += [self.i.ready.eq(1), wp.addr.eq(idx), wp.data.eq(self.i.payload),
                             wp.en.eq(self.i.valid)]
                with m.If(self.i.valid):
                    m.d.sync += [idx.eq(idx + 1), total.eq(total + self.i.payload)]
                    with m.If(idx == 0):
                        m.d.sync += [n.eq(self.length), total.eq(self.i.payload)]
                    with m.If(idx + 1 >= n_row):
                        m.d.sync += [idx.eq(0), rd.eq(0), rd_valid.eq(0), var.eq(0)]
                        m.next = "VARIANCE"
            with m.State("VARIANCE"):
                m.d.comb += rp.addr.eq(rd)
                m.d.sync += rd_valid.eq(rd < n)
                with m.If(rd < n):
                    m.d.sync += rd.eq(rd + 1)
                with m.If(rd_valid):
                    m.d.sync += var.eq(var + c * c)
                with m.Elif(rd == n):
                    m.next = "SQRT"
            with m.State("SQRT"):
                m.d.comb += isqrt.i.valid.eq(1)
                with m.If(isqrt.i.ready):
                    m.next = "SQRT_WAIT"
            with m.State("SQRT_WAIT"):
                with m.If(isqrt.o.valid):
                    m.d.sync += s.eq(Mux(isqrt.o.payload == 0, 1, isqrt.o.payload))
                    m.next = "DIVIDE"
            with m.State("DIVIDE"):
                m.d.comb += div.i.valid.eq(1)
                with m.If(div.i.ready):
                    m.next = "DIVIDE_WAIT"
            with m.State("DIVIDE_WAIT"):
                with m.If(div.o.valid):
                    m.d.sync += [g.eq(round_shift(div.o.payload.quotient * sqrt_rp.data, LN_SQRT_FRAC)),
                                 idx.eq(0)]
                    m.next = "NORMALIZE"
            with m.State("NORMALIZE"):
                step = out.i.ready & self.params.valid
                m.d.comb += rp.addr.eq(Mux(step, idx + 1, idx))
                norm = round_shift(c * g, LN_RECIP_BITS - LN_NORM_FRAC)
                acc = norm * self.params.payload.gamma + self.params.payload.beta
                m.d.comb += [
                    self.params.ready.eq(out.i.ready),
                    out.i.valid.eq(self.params.valid),
                    out.i.payload.data.eq(saturate(round_shift(acc * self.mult, self.shift), fmt)),
                    out.i.payload.first.eq(idx == 0),
                    out.i.payload.last.eq(idx + 1 == n),
                ]
                with m.If(step):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx + 1 == n):
                        m.d.sync += idx.eq(0)
                        m.next = "LOAD"
        return m

    def _elaborate_lanes(self):
        """``lanes`` elements per transfer, rows overlapped (see :meth:`pipeline_for`).

        Stages, each holding one row and handing it on by ``valid``/``ready``: the load (``sum(x)``
        and ``sum(x**2)`` over the row's words, written to the next free row slot), ``T1`` (the
        row's ``n``, sums; ``sqrt(D)`` ROM address), ``T2`` (``n Q``, ``S**2``, the ROM word),
        ``T3`` (``n Q - S**2``), ``T4`` (``V = n (n Q - S**2) + eps_q``, equal to ``sum(c**2) + eps_q``),
        the square roots and then the reciprocal dividers (:data:`LN_PIPE_COPIES` of each, by row in
        turn), ``G`` (``g``), and the output pass over the row's slot, which frees the slot with
        the row's last transfer.
        """
        m = Module()
        fmt, dmax, u = self._fmt, self._max_dim, self._lanes
        slots, copies = LN_ROW_SLOTS, LN_PIPE_COPIES
        depth = -(-dmax // u)
        idx_shape = range(depth)
        idx_bits = Shape.cast(idx_shape).width
        n_shape = range(dmax + 1)
        pos_shape = range(dmax + u)
        s_shape = signed((dmax * -fmt.qmin).bit_length() + 1)
        q_shape = unsigned(max(1, (dmax * max(fmt.qmin * fmt.qmin, fmt.qmax * fmt.qmax)).bit_length()))

        m.submodules.mem = mem = Memory(shape=unsigned(fmt.bits * u), depth=slots << idx_bits, init=[])
        wp, rp = mem.write_port(), mem.read_port(transparent_for=())
        sqrt_d = [0] + [layernorm_sqrt_d(d) for d in range(1, dmax + 1)]
        sd_shape = unsigned(max(sqrt_d).bit_length())
        m.submodules.sqrt_d = sqrt_rom = Memory(shape=sd_shape, depth=dmax + 1, init=sqrt_d)
        sqrt_rp = sqrt_rom.read_port(transparent_for=())
        sq_width = self.var_width + 1
        sq_res = (sq_width + 1) // 2
        tag = data.StructLayout({"n": n_shape, "total": s_shape, "sqrt_d": sd_shape})
        m.submodules.isqrt = isqrt = _RowRoundRobin(lambda: Isqrt(width=sq_width), copies, unsigned(sq_width),
                                                    unsigned(sq_res), tag)
        div_in = data.StructLayout({"dividend": unsigned(LN_RECIP_BITS + 1), "divisor": unsigned(sq_res)})
        div_out = data.StructLayout({"quotient": unsigned(LN_RECIP_BITS + 1)})
        m.submodules.div = div = _RowRoundRobin(
            lambda: Divider(dividend_width=LN_RECIP_BITS + 1, divisor_width=sq_res), copies, div_in, div_out, tag)
        m.submodules.out = out = PipelineRegister(row_layout(fmt, u))
        wiring.connect(m, out.o, wiring.flipped(self.o))

        # --- load: one transfer per cycle into the next free slot --------------------------------
        l_pos, l_idx = Signal(pos_shape), Signal(idx_shape)
        l_n, l_total, l_sq = Signal(n_shape), Signal(s_shape), Signal(q_shape)
        l_slot, occupied = Signal(range(slots)), Signal(range(slots + 1))
        # T1..T4: the row token on its way to the square root.
        t_valid = [Signal(name=f"t{k}_valid") for k in range(1, 5)]
        t1_n, t1_total, t1_sq = Signal(n_shape), Signal(s_shape), Signal(q_shape)
        t2_n, t2_total, t2_sd = Signal(n_shape), Signal(s_shape), Signal(sd_shape)
        t2_nq = Signal(unsigned(Shape.cast(n_shape).width + q_shape.width))
        t2_ss = Signal(unsigned(2 * s_shape.width))
        t3_n, t3_total, t3_sd = Signal(n_shape), Signal(s_shape), Signal(sd_shape)
        t3_d = Signal(unsigned(len(t2_nq)))
        t4_v = Signal(sq_width)
        t4_tag = Signal(tag)
        # G: the row's g, read by the output pass; the output pass's position and slot.
        g_valid, g_n, g_total = Signal(), Signal(n_shape), Signal(s_shape)
        g = Signal(LN_RECIP_BITS + 1 + sd_shape.width)
        o_pos, o_idx, o_slot = Signal(pos_shape), Signal(idx_shape), Signal(range(slots))

        def next_slot(slot):
            return Mux(slot == slots - 1, 0, slot + 1)

        step = g_valid & out.i.ready & self.params.valid
        o_last = o_pos + u >= g_n
        freed = step & o_last

        first = l_pos == 0
        n_row = Mux(first, self.length, l_n)
        last = l_pos + u >= n_row
        ins = [self.i.payload[j] for j in range(u)]
        keep = [_lane_valid(l_pos, j, n_row) for j in range(u)]
        beat_sum = tree([Mux(k, x, 0) for k, x in zip(keep, ins, strict=True)], lambda a, b: a + b)
        beat_sq = tree([Mux(k, x * x, 0) for k, x in zip(keep, ins, strict=True)], lambda a, b: a + b)
        total_new = Mux(first, 0, l_total) + beat_sum
        sq_new = Mux(first, 0, l_sq) + beat_sq

        # ready of each T stage: empty, or handing its row on in this cycle
        t_ready = [Signal(name=f"t{k}_ready") for k in range(1, 5)]
        m.d.comb += t_ready[3].eq(~t_valid[3] | isqrt.i.ready)
        for k in (2, 1, 0):
            m.d.comb += t_ready[k].eq(~t_valid[k] | t_ready[k + 1])
        take = [t_valid[k - 1] & t_ready[k] for k in range(1, 4)]  # T(k) -> T(k+1)

        fire = Signal()
        m.d.comb += [
            self.i.ready.eq(Mux(first, occupied < slots, 1) & Mux(last, t_ready[0], 1)),
            fire.eq(self.i.valid & self.i.ready),
            wp.addr.eq(Cat(l_idx, l_slot)), wp.data.eq(self.i.payload.as_value()), wp.en.eq(fire),
        ]
        t1_load = fire & last
        with m.If(fire):
            m.d.sync += [l_pos.eq(l_pos + u), l_idx.eq(l_idx + 1), l_total.eq(total_new), l_sq.eq(sq_new)]
            with m.If(first):
                m.d.sync += l_n.eq(self.length)
            with m.If(last):
                m.d.sync += [l_pos.eq(0), l_idx.eq(0), l_slot.eq(next_slot(l_slot))]
        m.d.sync += occupied.eq(occupied + (fire & first) - freed)

        # --- T1..T4: V = n (n Q - S**2) + eps_q -------------------------------------------------
        m.d.comb += sqrt_rp.addr.eq(Mux(t1_load, n_row, t1_n))  # its word is read while the row sits in T1
        with m.If(t_ready[0]):
            m.d.sync += t_valid[0].eq(t1_load)
        with m.If(t1_load):
            m.d.sync += [t1_n.eq(n_row), t1_total.eq(total_new), t1_sq.eq(sq_new)]
        with m.If(t_ready[1]):
            m.d.sync += t_valid[1].eq(t_valid[0])
        with m.If(take[0]):
            m.d.sync += [t2_n.eq(t1_n), t2_total.eq(t1_total), t2_sd.eq(sqrt_rp.data),
                         t2_nq.eq(t1_n * t1_sq), t2_ss.eq((t1_total * t1_total).as_unsigned())]
        with m.If(t_ready[2]):
            m.d.sync += t_valid[2].eq(t_valid[1])
        with m.If(take[1]):
            m.d.sync += [t3_n.eq(t2_n), t3_total.eq(t2_total), t3_sd.eq(t2_sd), t3_d.eq(t2_nq - t2_ss)]
        with m.If(t_ready[3]):
            m.d.sync += t_valid[3].eq(t_valid[2])
        with m.If(take[2]):
            m.d.sync += [t4_v.eq(t3_n * t3_d + self.eps_q), t4_tag.n.eq(t3_n), t4_tag.total.eq(t3_total),
                         t4_tag.sqrt_d.eq(t3_sd)]

        # --- square root, reciprocal, g -----------------------------------------------------------
        s_raw = isqrt.o.payload.data
        m.d.comb += [
            isqrt.i.valid.eq(t_valid[3]), isqrt.i.payload.data.eq(t4_v), isqrt.i.payload.tag.eq(t4_tag),
            div.i.valid.eq(isqrt.o.valid), isqrt.o.ready.eq(div.i.ready),
            div.i.payload.data.dividend.eq(1 << LN_RECIP_BITS),
            div.i.payload.data.divisor.eq(Mux(s_raw == 0, 1, s_raw)),
            div.i.payload.tag.eq(isqrt.o.payload.tag),
            div.o.ready.eq(~g_valid | freed),
        ]
        with m.If(div.o.valid & div.o.ready):
            dtag = div.o.payload.tag
            m.d.sync += [g_valid.eq(1), g_n.eq(dtag.n), g_total.eq(dtag.total),
                         g.eq(round_shift(div.o.payload.data.quotient * dtag.sqrt_d, LN_SQRT_FRAC))]
        with m.Elif(freed):
            m.d.sync += g_valid.eq(0)

        # --- output pass over the row's slot ------------------------------------------------------
        rd_idx, rd_slot = Signal(idx_shape), Signal(range(slots))
        m.d.comb += [rd_idx.eq(o_idx), rd_slot.eq(o_slot), rp.addr.eq(Cat(rd_idx, rd_slot))]
        with m.If(step):
            m.d.comb += rd_idx.eq(o_idx + 1)
            with m.If(o_last):
                m.d.comb += [rd_idx.eq(0), rd_slot.eq(next_slot(o_slot))]
        xs = [rp.data.word_select(j, fmt.bits).as_signed() for j in range(u)]
        for j, x in enumerate(xs):
            c = g_n * x - g_total  # D x - sum(x), exact
            prm = self.params.payload[j]
            norm = round_shift(c * g, LN_RECIP_BITS - LN_NORM_FRAC)
            acc = norm * prm.gamma + prm.beta
            m.d.comb += out.i.payload.data[j].eq(saturate(round_shift(acc * self.mult, self.shift), fmt))
        m.d.comb += [
            self.params.ready.eq(g_valid & out.i.ready),
            out.i.valid.eq(g_valid & self.params.valid),
            out.i.payload.first.eq(o_idx == 0),
            out.i.payload.last.eq(o_last),
        ]
        with m.If(step):
            m.d.sync += [o_pos.eq(o_pos + u), o_idx.eq(o_idx + 1)]
            with m.If(o_last):
                m.d.sync += [o_pos.eq(0), o_idx.eq(0), o_slot.eq(next_slot(o_slot))]
        return m
