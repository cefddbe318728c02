"""The crossbar's one source of truth: geometry, slicing, ADCs and device parameters.

A :class:`CrossbarConfig` describes one ReRAM tile (``rows`` wordlines x ``cols`` bitlines), how
int8 weights and inputs are cut into cell slices and DAC chunks, the ADC of every slice, and the
device constants a conductance-level simulator needs. The integer reference
(:mod:`vitforge.quant.crossbar.contract`), the Amaranth tile (``vitforge.hw.crossbar``), the cocotb
benches and the PyTorch simulator (``vitforge.sw.reram``) all read it; nothing restates its numbers.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

#: Weight and input magnitudes are 7 bits (int8 is symmetric: -127..127, sign apart).
MAGNITUDE_BITS = 7
#: Largest magnitude of the symmetric int8 range.
MAGNITUDE_MAX = (1 << MAGNITUDE_BITS) - 1
#: Cell and DAC resolutions the contract supports.
MIN_SLICE_BITS, MAX_SLICE_BITS = 1, MAGNITUDE_BITS
#: ADC resolutions the contract supports (24 bits cover any lossless width up to 1040 rows at c = d = 7).
MIN_ADC_BITS, MAX_ADC_BITS = 1, 24
#: The ADC modes: clamp the column sum (``saturate``) or keep its top bits, rounded (``scaled``).
ADC_MODES = ("saturate", "scaled")

AdcMode = Literal["saturate", "scaled"]

# PytorX's defaults (REFERENCE.md): Gmax = 1/3 kOhm^-1, Gmin = 1/3 MOhm^-1, read at 0.1 V.
DEFAULT_G_ON = 1.0 / 3e3
DEFAULT_G_OFF = 1.0 / 3e6
DEFAULT_READ_VOLTAGE = 0.1
# RTN model dG = G (bG + a) / (G - (bG + a)) (PytorX), on half the cells.
DEFAULT_RTN_A = 1.662e-7
DEFAULT_RTN_B = 0.0015
DEFAULT_RTN_FRACTION = 0.5


def check_slice_bits(value: int, name: str) -> int:
    """Check a cell or DAC resolution: an integer in 1..7."""
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_SLICE_BITS <= value <= MAX_SLICE_BITS:
        raise ValueError(f"{name} must be an integer in {MIN_SLICE_BITS}..{MAX_SLICE_BITS}, not {value!r}")
    return value


def check_positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return value


def lossless_adc_bits(rows: int, cell_bits: int, dac_bits: int) -> int:
    """Width L that holds every column sum: ``ceil(log2(rows * (2^c - 1) * (2^d - 1) + 1))``.

    Computed in exact integers (``int.bit_length``), so it never suffers from float rounding.
    """
    check_positive_int(rows, "rows")
    check_slice_bits(cell_bits, "cell_bits")
    check_slice_bits(dac_bits, "dac_bits")
    return (rows * ((1 << cell_bits) - 1) * ((1 << dac_bits) - 1)).bit_length()


@dataclass(frozen=True)
class CrossbarConfig:
    """One ReRAM crossbar tile and its periphery.

    Attributes:
        rows: wordlines per tile (the rows of a weight matrix are tiled by it).
        cols: bitlines (output columns) per tile.
        cell_bits: bits per ReRAM cell, c in 1..7; weights are cut into ``ceil(7 / c)`` slices.
        dac_bits: bits per DAC step, d in 1..7; inputs are fed in ``ceil(7 / d)`` chunks.
        adc_bits: ADC bits, one int for every slice or a tuple with one entry per slice (least
            significant slice first), each in 1..24; None gives every slice the lossless width L.
        adc_mode: ``"saturate"`` (clamp the column sum to the ADC's range) or ``"scaled"`` (keep
            its top N of L bits, rounded half up, then clamp).
        cols_per_adc: columns that share one ADC (a divisor of ``cols``): conversions of the
            columns of a group take turns, which multiplies the tile's latency (not its energy).
        g_on, g_off: the cell's highest and lowest conductance, siemens (g_on > g_off > 0).
        read_voltage: the read voltage, volts (> 0).
        prog_sigma: programming variation, the standard deviation of a cell's conductance in units
            of one level step ``delta_g`` (>= 0); fixed per simulated chip.
        rtn_fraction: fraction of the cells with random telegraph noise, 0..1.
        rtn_a, rtn_b: constants of the RTN amplitude ``dG = G (bG + a) / (G - (bG + a))`` (>= 0).
    """

    rows: int = 32
    cols: int = 32
    cell_bits: int = 2
    dac_bits: int = 1
    adc_bits: int | tuple[int, ...] | None = None
    adc_mode: AdcMode = "saturate"
    cols_per_adc: int = 1
    g_on: float = DEFAULT_G_ON
    g_off: float = DEFAULT_G_OFF
    read_voltage: float = DEFAULT_READ_VOLTAGE
    prog_sigma: float = 0.0
    rtn_fraction: float = DEFAULT_RTN_FRACTION
    rtn_a: float = DEFAULT_RTN_A
    rtn_b: float = DEFAULT_RTN_B

    def __post_init__(self) -> None:
        check_positive_int(self.rows, "rows")
        check_positive_int(self.cols, "cols")
        check_slice_bits(self.cell_bits, "cell_bits")
        check_slice_bits(self.dac_bits, "dac_bits")
        check_positive_int(self.cols_per_adc, "cols_per_adc")
        if self.cols % self.cols_per_adc:
            raise ValueError(f"cols_per_adc must divide cols = {self.cols}, not {self.cols_per_adc}")
        if self.adc_mode not in ADC_MODES:
            raise ValueError(f"adc_mode must be one of {ADC_MODES}, not {self.adc_mode!r}")
        bits = self.adc_bits
        if isinstance(bits, list):
            raise TypeError(f"adc_bits must be an int, a tuple or None, not a list ({bits!r}): use a tuple")
        entries = bits if isinstance(bits, tuple) else () if bits is None else (bits,)
        for b in entries:
            if isinstance(b, bool) or not isinstance(b, int) or not MIN_ADC_BITS <= b <= MAX_ADC_BITS:
                raise ValueError(f"adc_bits must be integers in {MIN_ADC_BITS}..{MAX_ADC_BITS}, not {b!r}")
        if isinstance(bits, tuple) and len(bits) != self.n_slices:
            raise ValueError(
                f"adc_bits needs one entry per slice: {self.n_slices} for cell_bits = {self.cell_bits}, "
                f"not {len(bits)} ({bits!r})"
            )
        _check_float(self.g_off, "g_off", low=0.0, low_open=True)
        _check_float(self.g_on, "g_on", low=self.g_off, low_open=True)
        _check_float(self.read_voltage, "read_voltage", low=0.0, low_open=True)
        _check_float(self.prog_sigma, "prog_sigma", low=0.0)
        _check_float(self.rtn_fraction, "rtn_fraction", low=0.0, high=1.0)
        _check_float(self.rtn_a, "rtn_a", low=0.0)
        _check_float(self.rtn_b, "rtn_b", low=0.0)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict (``adc_bits`` a list when it is a tuple)."""
        out = dataclasses.asdict(self)
        if isinstance(self.adc_bits, tuple):
            out["adc_bits"] = list(self.adc_bits)
        return out

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> CrossbarConfig:
        """The config :meth:`to_dict` wrote; unknown keys raise ``ValueError`` naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise ValueError(f"unknown CrossbarConfig field(s) {unknown}; valid: {sorted(known)}")
        values = dict(fields)
        if isinstance(values.get("adc_bits"), list):
            values["adc_bits"] = tuple(values["adc_bits"])
        return cls(**values)

    # -- slicing -----------------------------------------------------------------------------
    @property
    def n_slices(self) -> int:
        """Weight slices per magnitude: ``ceil(7 / cell_bits)``."""
        return math.ceil(MAGNITUDE_BITS / self.cell_bits)

    @property
    def n_chunks(self) -> int:
        """Input chunks per magnitude: ``ceil(7 / dac_bits)``."""
        return math.ceil(MAGNITUDE_BITS / self.dac_bits)

    @property
    def cell_max(self) -> int:
        """Largest cell level, ``2^c - 1``."""
        return (1 << self.cell_bits) - 1

    @property
    def dac_max(self) -> int:
        """Largest DAC step, ``2^d - 1``."""
        return (1 << self.dac_bits) - 1

    @property
    def lossless_bits(self) -> int:
        """L = ``ceil(log2(rows * (2^c - 1) * (2^d - 1) + 1))``: the width of every column sum."""
        return lossless_adc_bits(self.rows, self.cell_bits, self.dac_bits)

    @property
    def slice_adc_bits(self) -> tuple[int, ...]:
        """ADC bits of every slice, least significant slice first."""
        if self.adc_bits is None:
            return (self.lossless_bits,) * self.n_slices
        if isinstance(self.adc_bits, tuple):
            return self.adc_bits
        return (self.adc_bits,) * self.n_slices

    @property
    def is_lossless(self) -> bool:
        """True when every slice's ADC has at least L bits (then ``mvm`` equals ``x @ w``)."""
        return min(self.slice_adc_bits) >= self.lossless_bits

    @property
    def n_adcs(self) -> int:
        """ADCs per tile: ``cols / cols_per_adc``."""
        return self.cols // self.cols_per_adc

    @property
    def conversions_per_vector(self) -> int:
        """Conversions of every column per input vector and row tile: 2 x 2 polarities x chunks x slices."""
        return 4 * self.n_chunks * self.n_slices

    # -- device ------------------------------------------------------------------------------
    @property
    def delta_g(self) -> float:
        """One conductance level step, siemens: ``(g_on - g_off) / (2^c - 1)``."""
        return (self.g_on - self.g_off) / self.cell_max

    def conductance(self, level: int) -> float:
        """Conductance of a cell programmed to ``level`` (0..2^c - 1): ``g_off + level * delta_g``."""
        if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= self.cell_max:
            raise ValueError(f"level must be an integer in 0..{self.cell_max}, not {level!r}")
        return self.g_off + level * self.delta_g


def _check_float(value: float, name: str, *, low: float, high: float = math.inf, low_open: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bound = f"> {low:g}" if low_open else f">= {low:g}"
        rng = bound if high == math.inf else f"{bound} and <= {high:g}"
        raise ValueError(f"{name} must be a finite number {rng}, not {value!r}")
