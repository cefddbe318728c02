"""The crossbar tile: one ReRAM macro's bit-slice arithmetic and digital periphery, bit-exact with
:func:`vitforge.quant.crossbar.mvm` (with and without its on-chip noise).

:class:`CrossbarTile` holds one tile's int8 weights (``rows x cols``) and multiplies input vectors
by them as a ReRAM macro does: for each input polarity, weight polarity, DAC chunk and cell slice
(in that order, the slice fastest), adder trees form every column sum; the column's xorshift32
lane adds its noise LSBs; the slice's ADC clamps (``saturate``) or rounds and clamps (``scaled``);
the reading is shifted by ``j*d + k*c`` and added to (polarities agree) or subtracted from the
column's int32 accumulator. It is the digital twin used to emulate a macro at FPGA speed, and the
ADC interface and shift-add of a real one.

Generated from a :class:`~vitforge.quant.crossbar.CrossbarConfig`; the noise lanes of the tile are
those of row tile ``row_tile`` and global columns ``col_base .. col_base + cols - 1``
(:mod:`vitforge.quant.crossbar.noise`).
"""

from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from vitforge.quant.crossbar import MAGNITUDE_BITS, MAGNITUDE_MAX, NOISE_MAX, CrossbarConfig, initial_state
from vitforge.quant.crossbar.noise import (
    G_RAW_OFFSET,
    LANE_MIX,
    LANE_TILE_STRIDE,
    SIGMA_BITS,
    SIGMA_FRAC,
    UNIFORM_BITS,
    XORSHIFT_SHIFTS,
    ZERO_STATE_REPLACEMENT,
)

#: Width of the int8 operands and of the streamed outputs.
OPERAND_BITS = 8
OUTPUT_BITS = 32
#: Width of a noise lane's state and of the seed port.
STATE_BITS = 32
#: Signed width of g_raw (-510..510).
G_RAW_BITS = 11


def input_layout(config: CrossbarConfig) -> data.ArrayLayout:
    """An input vector: ``rows`` int8 (row 0 first)."""
    return data.ArrayLayout(signed(OPERAND_BITS), config.rows)


def weight_row_layout(config: CrossbarConfig) -> data.ArrayLayout:
    """One weight row: ``cols`` int8 (column 0 first)."""
    return data.ArrayLayout(signed(OPERAND_BITS), config.cols)


def output_layout(config: CrossbarConfig) -> data.ArrayLayout:
    """An output vector: ``cols`` int32."""
    return data.ArrayLayout(signed(OUTPUT_BITS), config.cols)


def output_bound(config: CrossbarConfig) -> int:
    """An upper bound of |y| for one tile.

    A reading is at most the ADC's full scale, and at most the largest column sum plus the
    largest noise plus the scaled ADC's rounding; two of the four polarity pairs add.
    """
    s_max = config.rows * config.cell_max * config.dac_max
    total = 0
    for k, bits in enumerate(config.slice_adc_bits):
        shift = max(config.lossless_bits - bits, 0) if config.adc_mode == "scaled" else 0
        reading = min(((1 << bits) - 1) << shift, s_max + NOISE_MAX + (1 << shift))
        for j in range(config.n_chunks):
            total += 2 * (reading << (j * config.dac_bits + k * config.cell_bits))
    return total


def adder_tree(m: Module, terms: list, width: int, name: str):
    """Balanced (log-depth) combinational adder tree of ``terms`` (unsigned values), ``width`` bits wide."""
    level = list(terms)
    depth = 0
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level) - 1, 2):
            s = Signal(unsigned(width), name=f"{name}_l{depth}_{i // 2}")
            m.d.comb += s.eq(level[i] + level[i + 1])
            nxt.append(s)
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
        depth += 1
    return level[0]


def magnitude(m: Module, value, name: str):
    """``(sign, |value|)`` of an int8, with -128 read as -127 (outside the contract)."""
    sign = Signal(name=f"{name}_s")
    mag = Signal(unsigned(MAGNITUDE_BITS), name=f"{name}_m")
    m.d.comb += [
        sign.eq(value < 0),
        mag.eq(Mux(value < -MAGNITUDE_MAX, MAGNITUDE_MAX, Mux(value < 0, -value, value))),
    ]
    return sign, mag


class CrossbarTile(wiring.Component):
    """One crossbar tile with its DACs, ADCs, noise lanes and shift-add.

    Ports:
        weights: stream of weight rows (:func:`weight_row_layout`, ``cols`` int8), row 0 first;
            after ``rows`` transfers the tile holds a new weight matrix (rows past K are zeros).
            Taken only while the tile is idle; an input vector waits until a load that has
            begun is complete.
        input: stream of input vectors (:func:`input_layout`, ``rows`` int8).
        output: stream of output vectors (:func:`output_layout`, ``cols`` int32), one per input,
            ``y = mvm(x, w, config, noise)`` for this tile's rows and columns.
        noise_seed: the generator's 32-bit seed, read on ``reseed``.
        noise_sigma: the 16-bit sigma code (:attr:`NoiseGenerator.sigma_code`); 0 turns noise off.
            Hold it stable while a vector is processed.
        reseed: strobe (one cycle, while idle): every lane restarts from ``noise_seed``
            (after reset the lanes hold seed 0's initial states).
        busy: high from an input transfer until its output has been taken.

    Timing (properties, from the config alone): a vector takes :attr:`conversion_cycles` =
    ``4 * n_chunks * n_slices * cols_per_adc`` cycles of conversions; its output is valid
    :attr:`latency` = ``conversion_cycles + 2`` cycles after the input transfer; with the output
    always taken, one vector is accepted every :attr:`interval` = ``conversion_cycles + 3`` cycles.
    A weight load takes :attr:`load_cycles` = ``rows`` cycles. -128 operands are read as -127
    (outside the contract: int8 is symmetric).
    """

    def __init__(self, *, config: CrossbarConfig, row_tile: int = 0, col_base: int = 0):
        if not isinstance(config, CrossbarConfig):
            raise TypeError(f"config must be a CrossbarConfig, not {type(config).__name__}")
        if isinstance(row_tile, bool) or not isinstance(row_tile, int) or row_tile < 0:
            raise ValueError(f"row_tile must be a non-negative integer, not {row_tile!r}")
        if isinstance(col_base, bool) or not isinstance(col_base, int) or not (
            0 <= col_base and col_base + config.cols <= LANE_TILE_STRIDE
        ):
            raise ValueError(f"col_base must be in 0..{LANE_TILE_STRIDE - config.cols}, not {col_base!r}")
        if output_bound(config) >= 1 << (OUTPUT_BITS - 1):
            raise ValueError(f"outputs of {config} can exceed int32: use fewer rows or ADC bits")
        self._config = config
        self._row_tile = row_tile
        self._col_base = col_base
        super().__init__({
            "weights": In(stream.Signature(weight_row_layout(config))),
            "input": In(stream.Signature(input_layout(config))),
            "output": Out(stream.Signature(output_layout(config))),
            "noise_seed": In(STATE_BITS),
            "noise_sigma": In(SIGMA_BITS),
            "reseed": In(1),
            "busy": Out(1),
        })

    @property
    def config(self) -> CrossbarConfig:
        return self._config

    @property
    def row_tile(self) -> int:
        return self._row_tile

    @property
    def col_base(self) -> int:
        return self._col_base

    @property
    def conversion_cycles(self) -> int:
        """Cycles of conversions per input vector: ``4 * n_chunks * n_slices * cols_per_adc``."""
        return self._config.conversions_per_vector * self._config.cols_per_adc

    @property
    def latency(self) -> int:
        """Cycles from an input transfer to its output being valid."""
        return self.conversion_cycles + 2

    @property
    def interval(self) -> int:
        """Cycles between input transfers at full rate (output always ready)."""
        return self.conversion_cycles + 3

    @property
    def load_cycles(self) -> int:
        """Cycles of a weight load at full rate (one row per cycle)."""
        return self._config.rows

    def lanes(self) -> list[int]:
        """Noise lane id of every column."""
        return [self._row_tile * LANE_TILE_STRIDE + self._col_base + c for c in range(self._config.cols)]

    def elaborate(self, platform):
        cfg = self._config
        rows, cols, cpa = cfg.rows, cfg.cols, cfg.cols_per_adc
        n_j, n_k = cfg.n_chunks, cfg.n_slices
        big_l = cfg.lossless_bits
        m = Module()

        # -- operand registers ------------------------------------------------------------------
        # Every cell holds its weight's sign and its magnitude padded to n_slices * c bits; the
        # magnitude rotates right by c bits at every slice step, so the current slice is always its
        # low c bits (n_slices steps bring it back). Input magnitudes rotate by d bits per chunk.
        # Operands need no reset (a load or an input transfer writes them before they are read).
        cell = data.StructLayout({"mag": unsigned(n_k * cfg.cell_bits), "sign": 1})
        w_cell = [[Signal(cell, name=f"w_{r}_{c}", reset_less=True) for c in range(cols)] for r in range(rows)]
        x_sign = [Signal(name=f"x_s_{r}", reset_less=True) for r in range(rows)]
        x_rot = [Signal(unsigned(n_j * cfg.dac_bits), name=f"x_m_{r}", reset_less=True) for r in range(rows)]
        w_row = Signal(range(rows), name="w_row")  # rows of a load taken so far

        # -- conversion counters: stage A (column sums) and stage B (ADC, shift-add) -----------
        # counters are at least 1 bit wide (a single chunk or slice leaves them at 0)
        a_px, a_pw = Signal(name="a_px"), Signal(name="a_pw")
        a_j, a_k = Signal(range(max(n_j, 2)), name="a_j"), Signal(range(max(n_k, 2)), name="a_k")
        a_done = Signal(name="a_done")
        b_px, b_pw = Signal(name="b_px"), Signal(name="b_pw")
        b_j, b_k = Signal(range(max(n_j, 2)), name="b_j"), Signal(range(max(n_k, 2)), name="b_k")
        b_valid = Signal(name="b_valid")
        u = Signal(range(max(cpa, 2)), name="u")  # column of each ADC's group being converted
        s_reg = [Signal(unsigned(big_l), name=f"s_{c}", reset_less=True) for c in range(cols)]
        acc = [Signal(signed(OUTPUT_BITS), name=f"acc_{c}") for c in range(cols)]
        state = [Signal(unsigned(STATE_BITS), init=initial_state(0, lane), name=f"lane_{c}")
                 for c, lane in enumerate(self.lanes())]

        idle = Signal(name="idle")
        start = Signal(name="start")
        running = Signal(name="running")
        out_valid = Signal(name="out_valid")
        m.d.comb += [
            idle.eq(~running & ~out_valid),
            self.busy.eq(~idle),
            self.weights.ready.eq(idle),
            self.input.ready.eq(idle & (w_row == 0) & ~self.weights.valid),
            start.eq(self.input.valid & self.input.ready),
            self.output.valid.eq(out_valid),
        ]
        for c in range(cols):
            m.d.comb += self.output.payload[c].eq(acc[c])

        # -- weight load: rows shift up a chain, the last transfer lands in row rows - 1 ------
        with m.If(self.weights.valid & self.weights.ready):
            m.d.sync += w_row.eq(Mux(w_row == rows - 1, 0, w_row + 1))
            for c in range(cols):
                sign, mag = magnitude(m, self.weights.payload[c], f"wl_{c}")
                m.d.sync += [w_cell[rows - 1][c].sign.eq(sign), w_cell[rows - 1][c].mag.eq(mag)]
                for r in range(rows - 1):
                    m.d.sync += w_cell[r][c].eq(w_cell[r + 1][c])

        # -- stage A: every column's sum for (a_px, a_pw, a_j, a_k) -----------------------------
        x_act = []
        for r in range(rows):
            act = Signal(unsigned(cfg.dac_bits), name=f"xa_{r}")
            m.d.comb += act.eq(Mux(x_sign[r] == a_px, x_rot[r][:cfg.dac_bits], 0))
            x_act.append(act)
        sums = []
        for c in range(cols):
            products = []
            for r in range(rows):
                p = Signal(unsigned(cfg.dac_bits + cfg.cell_bits), name=f"p_{r}_{c}")
                w = w_cell[r][c]
                m.d.comb += p.eq(Mux(w.sign == a_pw, w.mag[:cfg.cell_bits], 0) * x_act[r])
                products.append(p)
            sums.append(adder_tree(m, products, big_l, f"t_{c}"))

        # stage B is free for the next conversion's sums after its last column group
        fill = Signal(name="fill")
        m.d.comb += fill.eq(running & (~b_valid | (u == cpa - 1)))
        with m.If(fill):
            with m.If(~a_done):
                m.d.sync += [b_px.eq(a_px), b_pw.eq(a_pw), b_j.eq(a_j), b_k.eq(a_k), b_valid.eq(1)]
                m.d.sync += [s_reg[c].eq(sums[c]) for c in range(cols)]
                self._advance(m, a_px, a_pw, a_j, a_k, a_done)
                for r in range(rows):
                    m.d.sync += [w_cell[r][c].mag.eq(w_cell[r][c].mag.rotate_right(cfg.cell_bits))
                                 for c in range(cols)]
                    with m.If(a_k == n_k - 1):
                        m.d.sync += x_rot[r].eq(x_rot[r].rotate_right(cfg.dac_bits))
            with m.Else():
                m.d.sync += b_valid.eq(0)
        with m.If(b_valid):
            m.d.sync += u.eq(Mux(u == cpa - 1, 0, u + 1))

        # -- stage B: the ADCs, each converting its group's columns in turn --------------------
        for a in range(cfg.n_adcs):
            group = list(range(a * cpa, (a + 1) * cpa))
            def pick(regs, group=group):
                return regs[group[0]] if cpa == 1 else Array([regs[c] for c in group])[u]

            s_sel, st_sel, acc_sel = pick(s_reg), pick(state), pick(acc)
            nxt = self._xorshift(m, st_sel, f"adc{a}")
            contribution = self._convert(m, s_sel, nxt, b_px, b_pw, b_j, b_k, f"adc{a}")
            with m.If(b_valid):
                for i, c in enumerate(group):
                    with m.If((u == i) if cpa > 1 else 1):
                        m.d.sync += [state[c].eq(nxt), acc[c].eq(acc_sel + contribution)]

        # -- control ----------------------------------------------------------------------------
        with m.If(start):
            for r in range(rows):
                sign, mag = magnitude(m, self.input.payload[r], f"x_{r}")
                m.d.sync += [x_sign[r].eq(sign), x_rot[r].eq(mag)]
            m.d.sync += [running.eq(1), a_px.eq(0), a_pw.eq(0), a_j.eq(0),
                         a_k.eq(0), a_done.eq(0), b_valid.eq(0), u.eq(0)]
            m.d.sync += [acc[c].eq(0) for c in range(cols)]
        with m.If(running & a_done & b_valid & (u == cpa - 1)):
            m.d.sync += [running.eq(0), out_valid.eq(1)]
        with m.If(out_valid & self.output.ready):
            m.d.sync += out_valid.eq(0)

        # -- reseed (after the lane updates: it wins) -------------------------------------------
        with m.If(self.reseed):
            for c, lane in enumerate(self.lanes()):
                mixed = Signal(unsigned(STATE_BITS), name=f"seed_{c}")
                mix = ((lane + 1) * LANE_MIX) & ((1 << STATE_BITS) - 1)
                m.d.comb += mixed.eq(self.noise_seed ^ Const(mix, STATE_BITS))
                m.d.sync += state[c].eq(Mux(mixed == 0, ZERO_STATE_REPLACEMENT, mixed))
        return m

    def _advance(self, m: Module, px, pw, j, k, done) -> None:
        """Step (px, pw, j, k) in conversion order (k fastest); ``done`` after the last."""
        cfg = self._config
        with m.If(k != cfg.n_slices - 1):
            m.d.sync += k.eq(k + 1)
        with m.Else():
            m.d.sync += k.eq(0)
            with m.If(j != cfg.n_chunks - 1):
                m.d.sync += j.eq(j + 1)
            with m.Else():
                m.d.sync += j.eq(0)
                with m.If(~pw):
                    m.d.sync += pw.eq(1)
                with m.Else():
                    m.d.sync += pw.eq(0)
                    with m.If(~px):
                        m.d.sync += px.eq(1)
                    with m.Else():
                        m.d.sync += done.eq(1)

    @staticmethod
    def _xorshift(m: Module, x, name: str):
        a, b, c = XORSHIFT_SHIFTS
        t1 = Signal(unsigned(STATE_BITS), name=f"{name}_x1")
        t2 = Signal(unsigned(STATE_BITS), name=f"{name}_x2")
        t3 = Signal(unsigned(STATE_BITS), name=f"{name}_x3")
        m.d.comb += [t1.eq(x ^ (x << a)[:STATE_BITS]), t2.eq(t1 ^ (t1 >> b)), t3.eq(t2 ^ (t2 << c)[:STATE_BITS])]
        return t3

    def _convert(self, m: Module, s, nxt, px, pw, j, k, name: str):
        """Noise, ADC and shift of one conversion: the signed contribution to the accumulator."""
        cfg = self._config
        big_l = cfg.lossless_bits
        g_raw = Signal(signed(G_RAW_BITS), name=f"{name}_g")
        byte_sum = sum(nxt[i * UNIFORM_BITS:(i + 1) * UNIFORM_BITS] for i in range(STATE_BITS // UNIFORM_BITS))
        m.d.comb += g_raw.eq(byte_sum - G_RAW_OFFSET)
        product = Signal(signed(SIGMA_BITS + 1 + G_RAW_BITS), name=f"{name}_sg")
        m.d.comb += product.eq(self.noise_sigma * g_raw)
        noise = Signal(signed(G_RAW_BITS + 1), name=f"{name}_n")
        m.d.comb += noise.eq((product + (1 << (SIGMA_FRAC - 1))) >> SIGMA_FRAC)
        noisy = Signal(signed(max(big_l, G_RAW_BITS) + 2), name=f"{name}_sn")
        m.d.comb += noisy.eq(s + noise)

        reading = Signal(unsigned(OUTPUT_BITS), name=f"{name}_r")  # ADC code x 2^(L-N) x 2^(k*c)
        with m.Switch(k):
            for kk, bits in enumerate(cfg.slice_adc_bits):
                with m.Case(kk):
                    shift = max(big_l - bits, 0) if cfg.adc_mode == "scaled" else 0
                    q = Signal(signed(len(noisy)), name=f"{name}_q{kk}")
                    m.d.comb += q.eq((noisy + (1 << (shift - 1))) >> shift if shift else noisy)
                    top = (1 << bits) - 1
                    code = Mux(q < 0, 0, Mux(q > top, top, q))
                    m.d.comb += reading.eq(code << (shift + kk * cfg.cell_bits))
        shifted = Signal(unsigned(OUTPUT_BITS), name=f"{name}_v")
        with m.Switch(j):
            for jj in range(cfg.n_chunks):
                with m.Case(jj):
                    m.d.comb += shifted.eq(reading << (jj * cfg.dac_bits))
        contribution = Signal(signed(OUTPUT_BITS), name=f"{name}_c")
        m.d.comb += contribution.eq(Mux(px ^ pw, -shifted, shifted))
        return contribution

