"""The on-chip ADC noise generator: seeded xorshift32 lanes and a fixed-point Gaussian.

Hardware reproduces it bit for bit (``vitforge.hw.crossbar``), so it is defined in integers:

* **Lanes.** Every column m of every row tile t has its own 32-bit xorshift32 state, its *lane*,
  with id ``lane = t * 2^16 + m``. Its initial state is
  ``seed XOR ((lane + 1) * 0x9E3779B9 mod 2^32)``, replaced by ``0x6D2B79F5`` if that is 0
  (xorshift32 never leaves 0).
* **Draw.** A draw advances the state by one xorshift32 step
  (``x ^= x << 13; x ^= x >> 17; x ^= x << 5``, all mod 2^32) and reads the *new* state's four
  bytes b0..b3: ``g_raw = b0 + b1 + b2 + b3 - 510``, an integer in -510..510 with mean 0 and
  standard deviation ``G_RAW_STD = sqrt(4 (2^16 - 1) / 12) = 147.80``: a sum of four uniforms,
  ``g = g_raw / G_RAW_STD`` approximates N(0, 1).
* **Sigma** is a 16-bit unsigned code with 16 fractional bits, in units of ``G_RAW_STD``:
  ``sigma_code = round(sigma_lsb * 2^16 / G_RAW_STD)``, 0..65535 (sigma_lsb up to ~147.8 LSBs).
  The effective sigma is ``sigma_code * G_RAW_STD / 2^16`` LSBs.
* **Noise** added to the column sum s before the ADC clamps: ``round(sigma * g) =
  (sigma_code * g_raw + 2^15) >> 16`` (arithmetic shift: round half up), in -510..510.
* **Order.** A lane draws once per conversion of its column, in the order: input vector n, input
  polarity (+ then -), weight polarity (+ then -), chunk j (least significant first), slice k
  (least significant first). Every conversion draws, whatever the sum. Each ``mvm`` call (and the
  tile after a reseed) starts every lane from its initial state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: xorshift32 shifts (Marsaglia 2003).
XORSHIFT_SHIFTS = (13, 17, 5)
#: Multiplier that spreads lane ids over the state (the 32-bit golden ratio).
LANE_MIX = 0x9E3779B9
#: The state a lane takes when its mixed seed is 0.
ZERO_STATE_REPLACEMENT = 0x6D2B79F5
#: Lane id stride of a row tile: lane = tile * LANE_TILE_STRIDE + column.
LANE_TILE_STRIDE = 1 << 16
#: Uniforms summed per Gaussian sample (the four bytes of the state).
N_UNIFORMS = 4
UNIFORM_BITS = 8
#: Mean of the raw byte sum, subtracted: 4 x 255 / 2.
G_RAW_OFFSET = N_UNIFORMS * ((1 << UNIFORM_BITS) - 1) // 2
#: Largest |g_raw|.
G_RAW_MAX = G_RAW_OFFSET
#: Standard deviation of g_raw: sqrt(4 (256^2 - 1) / 12).
G_RAW_STD = math.sqrt(N_UNIFORMS * ((1 << (2 * UNIFORM_BITS)) - 1) / 12)
#: Sigma code: unsigned, SIGMA_FRAC fractional bits, in units of G_RAW_STD.
SIGMA_BITS = 16
SIGMA_FRAC = 16
SIGMA_CODE_MAX = (1 << SIGMA_BITS) - 1
#: Largest sigma in LSBs the code can express.
MAX_SIGMA_LSB = SIGMA_CODE_MAX * G_RAW_STD / (1 << SIGMA_FRAC)
#: Largest |noise| in LSBs.
NOISE_MAX = (SIGMA_CODE_MAX * G_RAW_MAX + (1 << (SIGMA_FRAC - 1))) >> SIGMA_FRAC

_MASK32 = np.uint64(0xFFFFFFFF)


def xorshift32(state: np.ndarray) -> np.ndarray:
    """One xorshift32 step of every lane.

    Args:
        state: (...,) uint64 holding 32-bit states.

    Returns:
        (...,) uint64, the next states.
    """
    a, b, c = (np.uint64(s) for s in XORSHIFT_SHIFTS)
    x = state
    x = (x ^ (x << a)) & _MASK32
    x = x ^ (x >> b)
    return (x ^ (x << c)) & _MASK32


def lane_ids(tile: int, cols: int, col_base: int = 0) -> np.ndarray:
    """Lane ids of the columns ``col_base .. col_base + cols - 1`` of row tile ``tile``: (cols,) int64."""
    if tile < 0 or col_base < 0 or cols < 1 or col_base + cols > LANE_TILE_STRIDE:
        raise ValueError(
            f"lanes need tile >= 0 and columns in 0..{LANE_TILE_STRIDE - 1}, "
            f"not tile {tile}, columns {col_base}..{col_base + cols - 1}"
        )
    return tile * LANE_TILE_STRIDE + col_base + np.arange(cols, dtype=np.int64)


def initial_state(seed: int, lane: int) -> int:
    """Initial xorshift32 state of one lane (a Python int: what hardware holds after a reseed)."""
    state = (seed ^ ((lane + 1) * LANE_MIX)) & 0xFFFFFFFF
    return state or ZERO_STATE_REPLACEMENT


def noise_from_state(state: np.ndarray, sigma_code: int) -> np.ndarray:
    """Noise LSBs read from (already advanced) states: ``(sigma_code * g_raw + 2^15) >> 16``.

    Args:
        state: (...,) uint64 32-bit states.
        sigma_code: 0..65535.

    Returns:
        (...,) int64 in -510..510.
    """
    s = state.astype(np.int64)
    g_raw = (s & 0xFF) + ((s >> 8) & 0xFF) + ((s >> 16) & 0xFF) + ((s >> 24) & 0xFF) - G_RAW_OFFSET
    return (sigma_code * g_raw + (1 << (SIGMA_FRAC - 1))) >> SIGMA_FRAC


@dataclass(frozen=True)
class NoiseGenerator:
    """A seeded on-chip ADC noise source (see the module docstring for its exact definition).

    Args:
        seed: 32-bit seed, 0..2^32 - 1.
        sigma_lsb: standard deviation of the noise in ADC input LSBs (column-sum units),
            0..MAX_SIGMA_LSB (~147.8); it is quantized to ``sigma_code``.
    """

    seed: int = 0
    sigma_lsb: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= 0xFFFFFFFF:
            raise ValueError(f"seed must be an integer in 0..2^32-1, not {self.seed!r}")
        s = self.sigma_lsb
        if isinstance(s, bool) or not isinstance(s, int | float) or not math.isfinite(s) or s < 0:
            raise ValueError(f"sigma_lsb must be a finite number >= 0, not {s!r}")
        if s > MAX_SIGMA_LSB:
            raise ValueError(f"sigma_lsb must be at most {MAX_SIGMA_LSB:.2f} (a 16-bit sigma code), not {s!r}")

    @property
    def sigma_code(self) -> int:
        """The 16-bit fixed-point sigma the hardware is given: ``round(sigma_lsb * 2^16 / G_RAW_STD)``."""
        return min(math.floor(self.sigma_lsb * (1 << SIGMA_FRAC) / G_RAW_STD + 0.5), SIGMA_CODE_MAX)

    @property
    def effective_sigma_lsb(self) -> float:
        """The standard deviation the quantized code gives, in LSBs."""
        return self.sigma_code * G_RAW_STD / (1 << SIGMA_FRAC)

    def initial_states(self, lanes: np.ndarray) -> np.ndarray:
        """Initial states of ``lanes`` ((L,) int64): (L,) uint64."""
        lanes = np.asarray(lanes, dtype=np.int64)
        mixed = ((lanes.astype(np.uint64) + np.uint64(1)) * np.uint64(LANE_MIX)) & _MASK32
        state = np.uint64(self.seed) ^ mixed
        return np.where(state == 0, np.uint64(ZERO_STATE_REPLACEMENT), state)

    def samples(self, n_draws: int, lanes: np.ndarray) -> np.ndarray:
        """The first ``n_draws`` noise values of every lane, in draw order.

        Loops over draws and vectorizes over lanes.

        Args:
            n_draws: draws per lane (>= 0).
            lanes: (L,) int64 lane ids (see :func:`lane_ids`).

        Returns:
            (n_draws, L) int64 noise LSBs in -510..510.
        """
        if isinstance(n_draws, bool) or not isinstance(n_draws, int | np.integer) or n_draws < 0:
            raise ValueError(f"n_draws must be a non-negative integer, not {n_draws!r}")
        state = self.initial_states(lanes)
        states = np.empty((int(n_draws), state.shape[0]), dtype=np.uint64)
        for i in range(int(n_draws)):
            state = xorshift32(state)
            states[i] = state
        return noise_from_state(states, self.sigma_code)
