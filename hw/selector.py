"""Token selector control logic (HeatViT): bit-exact hardware of :mod:`vitforge.quant.selector`.

The selector's MLPs run on the GEMM engine and the nonlinear units; these blocks are what is
left:

* :class:`FuseScore`: per token, ``f = floor(sum s_i a_i / sum a_i)`` (0 when all weights are 0)
  and the keep decision ``f >= threshold`` (the class token, marked ``first``, is always kept).
* :class:`TokenCompactor`: streams an image's tokens, passes the kept ones through in order
  (a dense matrix) and appends the package token (keep-score weighted mean of the pruned ones,
  one reciprocal ``floor(2**PACKAGE_RECIP_BITS / sum w)``) when anything was pruned.
* :class:`TokenMean`: ``round(sum(x) * floor(2**MEAN_RECIP_BITS / n))`` over a row of ``n``
  int8 codes (:func:`vitforge.quant.selector.token_mean`).
"""

from __future__ import annotations

from amaranth import Array, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from vitforge.quant.fixed import INT8
from vitforge.quant.selector import MEAN_RECIP_BITS, PACKAGE_RECIP_BITS, SCORE_FMT, WEIGHT_FMT

from .divider import Divider
from .nonlinear import fmt_shape
from .poly_unit import check_int, round_shift, saturate

__all__ = ["FuseScore", "TokenCompactor", "TokenMean", "TokenSelector", "decision_layout", "token_layout"]

#: Keep scores are non-negative Q0.7 codes (0..SCORE_FMT.qmax): one bit fewer than the format.
SCORE_BITS = SCORE_FMT.qmax.bit_length()


def decision_layout() -> data.StructLayout:
    """One token's decision: the fused score (Q0.7) and whether it is kept."""
    return data.StructLayout({"fused": unsigned(SCORE_BITS), "keep": 1})


def token_layout(lanes: int = 1) -> data.StructLayout:
    """Compacted output transfer: int8 ``data`` (one code, or ``lanes`` codes when ``lanes > 1``);
    ``first``/``last`` of each token row; ``package`` on the package token's transfers; ``end`` on the
    image's final transfer."""
    shape = fmt_shape(INT8) if lanes == 1 else data.ArrayLayout(fmt_shape(INT8), lanes)
    return data.StructLayout({"data": shape, "first": 1, "last": 1, "package": 1, "end": 1})


class FuseScore(wiring.Component):
    """Fused keep score and keep decision per token (:func:`~vitforge.quant.selector.fuse_scores`,
    :func:`~vitforge.quant.selector.keep_mask`).

    Args (keyword-only):
        heads: number of heads ``h`` (>= 1).

    Ports:
        threshold: ``In(range(SCORE_FMT.qmax + 1))``, the keep threshold (Q0.7).
        i: stream of ``{scores: h x Q0.7 codes 0..127, weights: h x Q0.8 codes, first}``;
            ``first`` marks the class token (always kept).
        o: stream of :func:`decision_layout`.

    Latency: :attr:`latency` cycles (one :class:`Divider` with ``SCORE_BITS`` quotient bits);
    one token per ``latency + 1`` cycles.
    """

    def __init__(self, *, heads: int):
        check_int(self, "heads", heads, 1)
        self._heads = heads
        super().__init__({
            "threshold": In(range(SCORE_FMT.qmax + 1)),
            "i": In(stream.Signature(data.StructLayout({
                "scores": data.ArrayLayout(unsigned(SCORE_BITS), heads),
                "weights": data.ArrayLayout(unsigned(WEIGHT_FMT.bits), heads),
                "first": 1,
            }))),
            "o": Out(stream.Signature(decision_layout())),
        })

    @property
    def heads(self) -> int:
        return self._heads

    #: Cycles from an accepted token to its decision (one divider of ``SCORE_BITS`` quotient bits).
    latency = Divider.latency_for(SCORE_BITS)

    def elaborate(self, platform):
        m = Module()
        h = self._heads
        num_w = (h * SCORE_FMT.qmax * WEIGHT_FMT.qmax).bit_length()
        den_w = (h * WEIGHT_FMT.qmax).bit_length()
        # The quotient is a weighted mean of scores <= SCORE_FMT.qmax: SCORE_BITS bits suffice.
        m.submodules.div = div = Divider(dividend_width=num_w, divisor_width=den_w, quotient_width=SCORE_BITS)

        scores, weights = self.i.payload.scores, self.i.payload.weights
        num = sum(scores[k] * weights[k] for k in range(h))
        den = sum(weights[k] for k in range(h))
        zero, first = Signal(), Signal()  # of the token inside the divider
        m.d.comb += [
            div.i.valid.eq(self.i.valid),
            div.i.payload.dividend.eq(num),
            div.i.payload.divisor.eq(den),
            self.i.ready.eq(div.i.ready),
        ]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [zero.eq(den == 0), first.eq(self.i.payload.first)]
        fused = Mux(zero, 0, div.o.payload.quotient)
        m.d.comb += [
            self.o.valid.eq(div.o.valid),
            self.o.payload.fused.eq(fused),
            self.o.payload.keep.eq(first | (fused >= self.threshold)),
            div.o.ready.eq(self.o.ready),
        ]
        return m


class TokenCompactor(wiring.Component):
    """Compaction of the kept tokens and the package token (:func:`~vitforge.quant.selector.select_tokens`).

    Args (keyword-only):
        max_tokens: most tokens per image ``N`` (sizes the counters and the weight sum).
        max_dim: longest token ``D`` (the package accumulator memory depth).
        lanes: elements per transfer ``U`` of ``tokens`` and ``o`` (>= 1; default 1).

    Ports:
        n_tokens, dim: the image's ``N`` (1..max_tokens) and ``D`` (1..max_dim), sampled when
            the image's first decision is taken.
        decisions: stream of :func:`decision_layout`, one per token, in token order (from
            :class:`FuseScore`); taken before the token's first element.
        tokens: stream of int8 codes, ``N x D`` row-major; at ``lanes = U > 1`` each transfer
            carries ``U`` consecutive codes of one token (``ceil(D / U)`` transfers per token, the
            last one's lanes past ``D`` are ignored).
        o: stream of :func:`token_layout` (``lanes``): the kept tokens in order, then the package
            token if any token was pruned (at ``U > 1``, lanes past ``D`` of a row's last transfer
            are unspecified).

    Throughput: one transfer per cycle (kept tokens pass through as ``o`` allows; pruned ones are
    absorbed at one transfer per cycle), plus one cycle per decision; the package token follows
    after one :class:`Divider` (``PACKAGE_RECIP_BITS + 1`` quotient bits), one element per cycle
    (one reciprocal multiplier): at ``U > 1`` a transfer every :meth:`package_beat_cycles` cycles.
    Saturation: the package token's elements saturate to int8.
    """

    def __init__(self, *, max_tokens: int, max_dim: int, lanes: int = 1):
        check_int(self, "max_tokens", max_tokens, 1)
        check_int(self, "max_dim", max_dim, 1)
        check_int(self, "lanes", lanes, 1)
        self._max_tokens, self._max_dim, self._lanes = max_tokens, max_dim, lanes
        elem = fmt_shape(INT8) if lanes == 1 else data.ArrayLayout(fmt_shape(INT8), lanes)
        super().__init__({
            "n_tokens": In(range(max_tokens + 1)),
            "dim": In(range(max_dim + 1)),
            "decisions": In(stream.Signature(decision_layout())),
            "tokens": In(stream.Signature(elem)),
            "o": Out(stream.Signature(token_layout(lanes))),
        })

    @property
    def lanes(self) -> int:
        return self._lanes

    @staticmethod
    def package_beat_cycles(lanes: int) -> int:
        """Cycles per package-token transfer with ``o.ready`` high at ``lanes`` elements per transfer:
        1 at ``lanes = 1``; else ``lanes`` cycles filling it one element at a time, then the transfer."""
        return 1 if lanes == 1 else lanes + 1

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    @property
    def max_dim(self) -> int:
        return self._max_dim

    def elaborate(self, platform):
        if self._lanes > 1:
            return self._elaborate_lanes()
        m = Module()
        nmax, dmax = self._max_tokens, self._max_dim
        w_max = SCORE_FMT.qmax + 1  # w = f + 1
        wsum_w = (nmax * w_max).bit_length()
        acc_shape = signed((nmax * w_max * -INT8.qmin).bit_length() + 1)

        m.submodules.acc = acc_mem = Memory(shape=acc_shape, depth=dmax, init=[])
        wp = acc_mem.write_port()
        rp = acc_mem.read_port(transparent_for=(wp,))
        m.submodules.div = div = Divider(dividend_width=PACKAGE_RECIP_BITS + 1, divisor_width=wsum_w)

        n, dim = Signal(range(nmax + 1)), Signal(range(dmax + 1))
        t, d = Signal(range(nmax + 1)), Signal(range(dmax + 1))
        keep, w = Signal(), Signal(range(w_max + 1))
        wsum = Signal(wsum_w)
        pruned_any = Signal()  # a pruned token has been fully accumulated
        recip = Signal(PACKAGE_RECIP_BITS + 1)

        last_elem = d + 1 == dim
        last_token = t + 1 == n
        d_next = Mux(last_elem, 0, d + 1)
        m.d.comb += [rp.addr.eq(d), div.o.ready.eq(1),
                     div.i.payload.dividend.eq(1 << PACKAGE_RECIP_BITS), div.i.payload.divisor.eq(wsum)]

        with m.FSM():
            with m.State("DECISION"):
                m.d.comb += self.decisions.ready.eq(1)
                with m.If(self.decisions.valid):
                    fused, kept = self.decisions.payload.fused, self.decisions.payload.keep
                    m.d.sync += [keep.eq(kept), w.eq(fused + 1), d.eq(0)]
                    with m.If(t == 0):
                        m.d.sync += [n.eq(self.n_tokens), dim.eq(self.dim), pruned_any.eq(0),
                                     wsum.eq(Mux(kept, 0, fused + 1))]
                    with m.Elif(~kept):
                        m.d.sync += wsum.eq(wsum + fused + 1)
                    m.next = "TOKEN"
            with m.State("TOKEN"):
                x = self.tokens.payload
                step = Signal()
                with m.If(keep):
                    m.d.comb += [
                        self.o.valid.eq(self.tokens.valid),
                        self.o.payload.data.eq(x),
                        self.o.payload.first.eq(d == 0),
                        self.o.payload.last.eq(last_elem),
                        self.o.payload.end.eq(last_elem & last_token & (wsum == 0)),  # w >= 1: nothing pruned
                        self.tokens.ready.eq(self.o.ready),
                        step.eq(self.tokens.valid & self.o.ready),
                    ]
                with m.Else():
                    # rp holds acc[d] (its address runs one step ahead on each element).
                    m.d.comb += [
                        self.tokens.ready.eq(1),
                        step.eq(self.tokens.valid),
                        wp.addr.eq(d),
                        wp.data.eq(Mux(pruned_any, rp.data, 0) + w * x),
                        wp.en.eq(step),
                    ]
                with m.If(step):
                    m.d.comb += rp.addr.eq(d_next)
                    m.d.sync += d.eq(d_next)
                    with m.If(last_elem):
                        m.d.sync += pruned_any.eq(pruned_any | ~keep)
                        with m.If(~last_token):
                            m.d.sync += t.eq(t + 1)
                            m.next = "DECISION"
                        with m.Elif(pruned_any | ~keep):
                            m.next = "DIVIDE"
                        with m.Else():
                            m.d.sync += t.eq(0)
                            m.next = "DECISION"
            with m.State("DIVIDE"):
                m.d.comb += div.i.valid.eq(1)
                with m.If(div.i.ready):
                    m.next = "RECIP"
            with m.State("RECIP"):
                with m.If(div.o.valid):
                    m.d.sync += recip.eq(div.o.payload.quotient)
                    m.next = "PACKAGE"
            with m.State("PACKAGE"):
                # d is 0 here and rp holds acc[0]; the address runs one step ahead on each transfer.
                m.d.comb += [
                    self.o.valid.eq(1),
                    self.o.payload.data.eq(saturate(round_shift(rp.data * recip, PACKAGE_RECIP_BITS), INT8)),
                    self.o.payload.first.eq(d == 0),
                    self.o.payload.last.eq(last_elem),
                    self.o.payload.package.eq(1),
                    self.o.payload.end.eq(last_elem),
                ]
                with m.If(self.o.ready):
                    m.d.comb += rp.addr.eq(d_next)
                    m.d.sync += d.eq(d_next)
                    with m.If(last_elem):
                        m.d.sync += t.eq(0)
                        m.next = "DECISION"
        return m

    def _elaborate_lanes(self):
        """``lanes = U > 1``: as :meth:`elaborate` with ``d`` counting transfers of ``U`` elements (the
        accumulator memory holds ``U`` sums a word); the package token's elements are computed one per
        cycle into a ``U``-element buffer that leaves as one transfer."""
        m = Module()
        nmax, dmax, u = self._max_tokens, self._max_dim, self._lanes
        w_max = SCORE_FMT.qmax + 1  # w = f + 1
        wsum_w = (nmax * w_max).bit_length()
        acc_shape = signed((nmax * w_max * -INT8.qmin).bit_length() + 1)
        beats_max = -(-dmax // u)

        m.submodules.acc = acc_mem = Memory(shape=data.ArrayLayout(acc_shape, u), depth=beats_max, init=[])
        wp = acc_mem.write_port()
        rp = acc_mem.read_port(transparent_for=(wp,))
        m.submodules.div = div = Divider(dividend_width=PACKAGE_RECIP_BITS + 1, divisor_width=wsum_w)

        n, beats = Signal(range(nmax + 1)), Signal(range(beats_max + 1))
        t, d = Signal(range(nmax + 1)), Signal(range(beats_max + 1))
        keep, w = Signal(), Signal(range(w_max + 1))
        wsum = Signal(wsum_w)
        pruned_any = Signal()  # a pruned token has been fully accumulated
        recip = Signal(PACKAGE_RECIP_BITS + 1)
        lane = Signal(range(u))  # the package element being computed
        pkg = Signal(data.ArrayLayout(fmt_shape(INT8), u))

        last_beat = d + 1 == beats
        last_token = t + 1 == n
        d_next = Mux(last_beat, 0, d + 1)
        m.d.comb += [rp.addr.eq(d), div.o.ready.eq(1),
                     div.i.payload.dividend.eq(1 << PACKAGE_RECIP_BITS), div.i.payload.divisor.eq(wsum)]

        with m.FSM():
            with m.State("DECISION"):
                m.d.comb += self.decisions.ready.eq(1)
                with m.If(self.decisions.valid):
                    fused, kept = self.decisions.payload.fused, self.decisions.payload.keep
                    m.d.sync += [keep.eq(kept), w.eq(fused + 1), d.eq(0)]
                    with m.If(t == 0):
                        m.d.sync += [n.eq(self.n_tokens), beats.eq((self.dim + (u - 1)) // u), pruned_any.eq(0),
                                     wsum.eq(Mux(kept, 0, fused + 1))]
                    with m.Elif(~kept):
                        m.d.sync += wsum.eq(wsum + fused + 1)
                    m.next = "TOKEN"
            with m.State("TOKEN"):
                x = self.tokens.payload
                step = Signal()
                with m.If(keep):
                    m.d.comb += [
                        self.o.valid.eq(self.tokens.valid),
                        self.o.payload.data.eq(x),
                        self.o.payload.first.eq(d == 0),
                        self.o.payload.last.eq(last_beat),
                        self.o.payload.end.eq(last_beat & last_token & (wsum == 0)),  # w >= 1: nothing pruned
                        self.tokens.ready.eq(self.o.ready),
                        step.eq(self.tokens.valid & self.o.ready),
                    ]
                with m.Else():
                    # rp holds acc[d] (its address runs one step ahead on each transfer).
                    m.d.comb += [self.tokens.ready.eq(1), step.eq(self.tokens.valid), wp.addr.eq(d), wp.en.eq(step)]
                    for j in range(u):
                        m.d.comb += wp.data[j].eq(Mux(pruned_any, rp.data[j], 0) + w * x[j])
                with m.If(step):
                    m.d.comb += rp.addr.eq(d_next)
                    m.d.sync += d.eq(d_next)
                    with m.If(last_beat):
                        m.d.sync += pruned_any.eq(pruned_any | ~keep)
                        with m.If(~last_token):
                            m.d.sync += t.eq(t + 1)
                            m.next = "DECISION"
                        with m.Elif(pruned_any | ~keep):
                            m.next = "DIVIDE"
                        with m.Else():
                            m.d.sync += t.eq(0)
                            m.next = "DECISION"
            with m.State("DIVIDE"):
                m.d.comb += div.i.valid.eq(1)
                with m.If(div.i.ready):
                    m.next = "RECIP"
            with m.State("RECIP"):
                with m.If(div.o.valid):
                    m.d.sync += [recip.eq(div.o.payload.quotient), lane.eq(0)]
                    m.next = "PACKAGE"
            with m.State("PACKAGE"):
                # d is the transfer being filled and rp holds acc[d]: one element per cycle.
                sums = Array(rp.data[j] for j in range(u))
                elem = saturate(round_shift(sums[lane] * recip, PACKAGE_RECIP_BITS), INT8)
                m.d.sync += [pkg.as_value().word_select(lane, INT8.bits).eq(elem), lane.eq(lane + 1)]
                with m.If(lane == u - 1):
                    m.d.sync += lane.eq(0)
                    m.next = "PACKAGE_SEND"
            with m.State("PACKAGE_SEND"):
                m.d.comb += [
                    self.o.valid.eq(1),
                    self.o.payload.data.eq(pkg),
                    self.o.payload.first.eq(d == 0),
                    self.o.payload.last.eq(last_beat),
                    self.o.payload.package.eq(1),
                    self.o.payload.end.eq(last_beat),
                ]
                with m.If(self.o.ready):
                    m.d.comb += rp.addr.eq(d_next)
                    m.d.sync += d.eq(d_next)
                    with m.If(last_beat):
                        m.d.sync += t.eq(0)
                        m.next = "DECISION"
                    with m.Else():
                        m.next = "PACKAGE"
        return m


class TokenSelector(wiring.Component):
    """The selector's control logic for one image: :class:`FuseScore` feeding :class:`TokenCompactor`.

    Args (keyword-only):
        heads, max_tokens, max_dim, lanes: as in the two blocks (from ``HwConfig``: ``max_heads``,
            ``max_tokens``, ``max_embed_dim``, ``unit_lanes``).

    Ports: ``threshold`` (FuseScore), ``n_tokens``/``dim``/``tokens``/``o`` (TokenCompactor),
    ``scores``: FuseScore's input stream, one entry per token, class token first.
    """

    def __init__(self, *, heads: int, max_tokens: int, max_dim: int, lanes: int = 1):
        self._fuse = FuseScore(heads=heads)
        self._compact = TokenCompactor(max_tokens=max_tokens, max_dim=max_dim, lanes=lanes)
        super().__init__({
            "threshold": In(range(SCORE_FMT.qmax + 1)),
            "n_tokens": In(range(max_tokens + 1)),
            "dim": In(range(max_dim + 1)),
            "scores": In(stream.Signature(self._fuse.i.payload.shape())),
            "tokens": In(stream.Signature(self._compact.tokens.payload.shape())),
            "o": Out(stream.Signature(token_layout(lanes))),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.fuse = fuse = self._fuse
        m.submodules.compact = compact = self._compact
        wiring.connect(m, wiring.flipped(self.scores), fuse.i)
        wiring.connect(m, fuse.o, compact.decisions)
        wiring.connect(m, wiring.flipped(self.tokens), compact.tokens)
        wiring.connect(m, compact.o, wiring.flipped(self.o))
        m.d.comb += [fuse.threshold.eq(self.threshold), compact.n_tokens.eq(self.n_tokens),
                     compact.dim.eq(self.dim)]
        return m


class TokenMean(wiring.Component):
    """Mean of a row of int8 codes (:func:`~vitforge.quant.selector.token_mean`), exact.

    Args (keyword-only):
        max_len: longest row (>= 1).

    Ports:
        length: the row length ``n`` (1..max_len), sampled with the row's first element.
        i: stream of int8 codes, one row after another.
        o: stream of int8 means, one per row (saturated; it cannot exceed int8 in practice).

    The reciprocal ``floor(2**MEAN_RECIP_BITS / n)`` (:class:`Divider`) runs while the row is
    summed; the mean comes out :attr:`latency` cycles after the last element when the row is
    shorter than the divider.
    """

    def __init__(self, *, max_len: int):
        check_int(self, "max_len", max_len, 1)
        self._max_len = max_len
        super().__init__({
            "length": In(range(max_len + 1)),
            "i": In(stream.Signature(fmt_shape(INT8))),
            "o": Out(stream.Signature(fmt_shape(INT8))),
        })

    @property
    def latency(self) -> int:
        """Cycles from a row's first element to its mean (for rows shorter than that)."""
        return (MEAN_RECIP_BITS + 1) + 1 + 1  # divider (one bit per cycle, plus load), then the result

    def elaborate(self, platform):
        m = Module()
        m.submodules.div = div = Divider(dividend_width=MEAN_RECIP_BITS + 1,
                                         divisor_width=self._max_len.bit_length())
        count = Signal(range(self._max_len + 1))
        n = Signal(range(self._max_len + 1))
        total = Signal(signed((self._max_len * -INT8.qmin).bit_length() + 1))
        recip = Signal(MEAN_RECIP_BITS + 1)
        have_recip, summed = Signal(), Signal()

        m.d.comb += [div.i.payload.dividend.eq(1 << MEAN_RECIP_BITS), div.i.payload.divisor.eq(self.length),
                     div.o.ready.eq(1)]
        # A row starts only when the divider is free; it is done when summed and divided.
        starting = count == 0
        m.d.comb += [
            self.i.ready.eq(~summed & (~starting | div.i.ready)),
            div.i.valid.eq(self.i.valid & starting & ~summed),
        ]
        with m.If(self.i.valid & self.i.ready):
            n_row = Mux(starting, self.length, n)
            m.d.sync += [count.eq(count + 1), total.eq(Mux(starting, 0, total) + self.i.payload)]
            with m.If(starting):
                m.d.sync += n.eq(self.length)
            with m.If(count + 1 >= n_row):
                m.d.sync += summed.eq(1)
        with m.If(div.o.valid):
            m.d.sync += [recip.eq(div.o.payload.quotient), have_recip.eq(1)]
        m.d.comb += [self.o.valid.eq(summed & have_recip),
                     self.o.payload.eq(saturate(round_shift(total * recip, MEAN_RECIP_BITS), INT8))]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += [summed.eq(0), have_recip.eq(0), count.eq(0)]
        return m
