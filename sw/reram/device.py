"""Device physics of a ReRAM cell at an operating point: read noise, random telegraph noise, variation.

The crossbar's conductances are ``G = g_off + level * delta_g`` (``CrossbarConfig.conductance``).
Noise sources, all expressed here in units of one level step ``delta_g`` so that a column sum
stays in the contract's integer units:

* **Read noise** (thermal + shot, PytorX's model, REFERENCE.md): a cell read at frequency ``f``,
  temperature ``T`` and read voltage ``V`` has
  ``G_rms = sqrt(G f (4 k T + 2 q V)) / V``. It is drawn fresh for every read.
* **Programming variation**: a fixed Gaussian offset per cell, ``prog_sigma`` level steps,
  drawn once per simulated chip. (The ``(dG/3)^2`` term of PytorX's formula is this term with
  ``prog_sigma = 1/3``.)
* **Random telegraph noise** on a fixed, seeded fraction ``rtn_fraction`` of the cells: at each read
  such a cell sits in its trapped state with probability ``rtn_probability`` and loses
  ``dG = G (bG + a) / (G - (bG + a))`` (PytorX's amplitude, ``a``, ``b`` from the config).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vitforge.quant.crossbar.config import CrossbarConfig

#: Boltzmann's constant, J/K.
BOLTZMANN = 1.380649e-23
#: Elementary charge, C.
ELECTRON_CHARGE = 1.602176634e-19
#: Probability that an RTN cell is in its trapped (low-conductance) state at a read (PytorX: half).
DEFAULT_RTN_PROBABILITY = 0.5


def _finite(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {value!r}")
    return float(value)


@dataclass(frozen=True)
class OperatingPoint:
    """Where the crossbar is read: ``frequency_hz`` (> 0) and ``temperature_k`` (> 0 K).

    REFERENCE.md's ReSNA operating points: 500 MHz / 350 K (its baseline), 1000 MHz / 400 K (its
    high-noise point); PytorX's default 10 MHz / 300 K.
    """

    frequency_hz: float = 1e8
    temperature_k: float = 300.0

    def __post_init__(self) -> None:
        if _finite(self.frequency_hz, "frequency_hz") <= 0:
            raise ValueError(f"frequency_hz must be > 0 Hz, not {self.frequency_hz!r}")
        if _finite(self.temperature_k, "temperature_k") <= 0:
            raise ValueError(f"temperature_k must be > 0 K, not {self.temperature_k!r}")

    def label(self) -> str:
        return f"{self.frequency_hz / 1e6:g} MHz / {self.temperature_k:g} K"


@dataclass(frozen=True)
class NoiseConfig:
    """Which noise a simulated read sees.

    Attributes:
        op: the operating point of the read noise.
        read: thermal + shot noise on every read.
        programming: the config's ``prog_sigma`` variation, fixed per chip.
        rtn: random telegraph noise on the config's ``rtn_fraction`` of the cells.
        rtn_probability: chance an RTN cell is trapped at a read, in [0, 1].
        adc_sigma_lsb: Gaussian ADC noise, in column-sum LSBs, rounded to whole LSBs and added
            before the ADC clamps (as quant/'s on-chip generator does), >= 0.
        prog_sigma: overrides the config's ``prog_sigma`` when not None (>= 0).
    """

    op: OperatingPoint = OperatingPoint()
    read: bool = True
    programming: bool = True
    rtn: bool = True
    rtn_probability: float = DEFAULT_RTN_PROBABILITY
    adc_sigma_lsb: float = 0.0
    prog_sigma: float | None = None

    def __post_init__(self) -> None:
        p = _finite(self.rtn_probability, "rtn_probability")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"rtn_probability must be in [0, 1], not {self.rtn_probability!r}")
        if _finite(self.adc_sigma_lsb, "adc_sigma_lsb") < 0:
            raise ValueError(f"adc_sigma_lsb (a sigma) must be >= 0, not {self.adc_sigma_lsb!r}")
        if self.prog_sigma is not None and _finite(self.prog_sigma, "prog_sigma") < 0:
            raise ValueError(f"prog_sigma (a sigma) must be >= 0, not {self.prog_sigma!r}")

    def program_sigma(self, cfg: CrossbarConfig) -> float:
        """Programming variation in level steps (0 when ``programming`` is off)."""
        if not self.programming:
            return 0.0
        return float(cfg.prog_sigma if self.prog_sigma is None else self.prog_sigma)


def read_sigma_siemens(g: torch.Tensor, cfg: CrossbarConfig, op: OperatingPoint) -> torch.Tensor:
    """Thermal + shot read noise of cells of conductance ``g`` (siemens, any shape, float):
    ``sqrt(g f (4 k T + 2 q V)) / V``, siemens, same shape."""
    v = cfg.read_voltage
    density = 4.0 * BOLTZMANN * op.temperature_k + 2.0 * ELECTRON_CHARGE * v
    return torch.sqrt(g * (op.frequency_hz * density)) / v


def rtn_delta_siemens(g: torch.Tensor, cfg: CrossbarConfig) -> torch.Tensor:
    """RTN amplitude ``dG = g (b g + a) / (g - (b g + a))`` of cells of conductance ``g`` (siemens)."""
    t = cfg.rtn_b * g + cfg.rtn_a
    return g * t / (g - t)


def level_conductance(levels: torch.Tensor, cfg: CrossbarConfig) -> torch.Tensor:
    """Conductances ``g_off + level * delta_g`` of integer-valued ``levels`` (any shape), float64 siemens."""
    return cfg.g_off + levels.to(torch.float64) * cfg.delta_g


@dataclass(frozen=True)
class CellNoise:
    """Per-cell noise statistics in level steps, for cells at ``levels``.

    Attributes:
        offset: the fixed part, ``(...)``: programming variation minus the RTN mean (float64).
        var: the per-read variance, ``(...)``: read noise plus the RTN variance (float64).
    """

    offset: torch.Tensor
    var: torch.Tensor


def cell_noise(levels: torch.Tensor, cfg: CrossbarConfig, noise: NoiseConfig, generator: torch.Generator) -> CellNoise:
    """Draw one chip's fixed cell offsets and compute every cell's per-read variance.

    Args:
        levels: integer-valued cell levels ``(...)`` in 0..2^c - 1.
        cfg: the crossbar (conductances, read voltage, RTN constants).
        noise: which sources are on.
        generator: seeds this chip's programming variation and its set of RTN cells.

    Returns:
        :class:`CellNoise` of the same shape as ``levels``.
    """
    g = level_conductance(levels, cfg)
    dg = cfg.delta_g
    offset = torch.zeros_like(g)
    var = torch.zeros_like(g)
    sigma_p = noise.program_sigma(cfg)
    if sigma_p > 0:
        offset += sigma_p * torch.randn(g.shape, generator=generator, dtype=torch.float64)
    if noise.read:
        var += (read_sigma_siemens(g, cfg, noise.op) / dg) ** 2
    if noise.rtn and cfg.rtn_fraction > 0:
        has_rtn = (torch.rand(g.shape, generator=generator, dtype=torch.float64) < cfg.rtn_fraction).to(g.dtype)
        amp = rtn_delta_siemens(g, cfg) / dg * has_rtn
        p = noise.rtn_probability
        offset -= p * amp
        var += p * (1.0 - p) * amp**2
    return CellNoise(offset, var)
