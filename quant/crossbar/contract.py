"""The crossbar's integer contract: bit-sliced, bit-serial matrix-vector products with per-slice ADCs.

Exactly, for ``x (n, K)`` and ``w (K, M)`` integers in -127..127 and a :class:`CrossbarConfig`:

* Sign-magnitude on both sides: ``x = x+ - x-``, ``w = w+ - w-``, magnitudes 0..127.
* Weight magnitudes are cut into slices of c bits: slice k = ``(m >> k*c) & (2^c - 1)``,
  k = 0 the least significant; there are ``ceil(7 / c)`` of them.
* Input magnitudes are cut into chunks of d bits: chunk j = ``(m >> j*d) & (2^d - 1)``;
  there are ``ceil(7 / d)`` of them.
* Rows are tiled by ``rows`` (the last tile is padded with zero rows).
* For each tile, input polarity, weight polarity, chunk j and slice k, a column reads
  ``s = sum_r chunk_j(x_r) * slice_k(w_r)``.
* Optional on-chip noise (:class:`~vitforge.quant.crossbar.noise.NoiseGenerator`) adds
  ``round(sigma * g)`` LSBs to s before the ADC clamps.
* The ADC of slice k, with N_k bits, gives (a noisy sum below 0 reads 0):

  - ``saturate``: ``min(s, 2^N - 1)``;
  - ``scaled``: ``min(floor(s / 2^(L-N) + 1/2), 2^N - 1) * 2^(L-N)``, where
    ``L = ceil(log2(rows * (2^c - 1) * (2^d - 1) + 1))`` is the lossless width; the identity
    when N >= L.
* The output: ``y = sum sign * 2^(j*d + k*c) * adc(s)`` over tiles, polarities, chunks and
  slices, with ``sign = +1`` when the polarities agree and -1 otherwise; it fits int32.

With N_k >= L for every slice (and no noise) the result equals ``x @ w`` exactly.

Array shapes used below: ``T`` row tiles, ``P = 2`` input polarities (+, -), ``Q = 2`` weight
polarities, ``J`` chunks, ``S`` slices. Column sums are ``(n, T, P, Q, J, S, M)`` int64.
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch

from .config import MAGNITUDE_MAX, CrossbarConfig
from .noise import LANE_TILE_STRIDE, NoiseGenerator, lane_ids

#: Polarities in conversion order: + then -.
N_POLARITIES = 2
#: A float64 matmul is exact while every sum stays below 2^53.
_FLOAT64_EXACT = 1 << 53

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def _to_numpy_int(a: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        if a.dtype.is_floating_point or a.dtype.is_complex or a.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor, not {a.dtype}")
        return a.detach().cpu().numpy().astype(np.int64)
    arr = np.asarray(a)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, not {arr.dtype}")
    return arr.astype(np.int64)


def _check_operand(a: np.ndarray, name: str) -> None:
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D, not of shape {a.shape}")
    if a.size:
        lo, hi = int(a.min()), int(a.max())
        if lo < -MAGNITUDE_MAX or hi > MAGNITUDE_MAX:
            bad = lo if lo < -MAGNITUDE_MAX else hi
            raise ValueError(f"{name} must hold integers in -{MAGNITUDE_MAX}..{MAGNITUDE_MAX}, not {bad}")


def _as_operands(x, w) -> tuple[np.ndarray, np.ndarray]:
    xa, wa = _to_numpy_int(x, "x"), _to_numpy_int(w, "w")
    _check_operand(xa, "x")
    _check_operand(wa, "w")
    if xa.shape[1] != wa.shape[0]:
        raise ValueError(f"x (n, K) and w (K, M) disagree on K: x is {xa.shape}, w is {wa.shape}")
    return xa, wa


def _like(result: np.ndarray, template) -> np.ndarray | torch.Tensor:
    return torch.from_numpy(result) if isinstance(template, torch.Tensor) else result


def n_row_tiles(k: int, config: CrossbarConfig) -> int:
    """Row tiles a K-row weight matrix takes (at least one)."""
    return max(1, math.ceil(k / config.rows))


def polarity_split(a: np.ndarray) -> np.ndarray:
    """Sign-magnitude split ``a = a+ - a-``.

    Args:
        a: (...,) int64 in -127..127.

    Returns:
        (2, ...) int64: ``[a+, a-]``, both in 0..127.
    """
    return np.stack([np.maximum(a, 0), np.maximum(-a, 0)])


def bit_fields(mag: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Cut magnitudes into ``count`` fields of ``bits`` bits, least significant first.

    Args:
        mag: (...,) int64 in 0..127.

    Returns:
        (..., count) int64: field i = ``(mag >> i*bits) & (2^bits - 1)``.
    """
    shifts = np.arange(count, dtype=np.int64) * bits
    return (mag[..., None] >> shifts) & ((1 << bits) - 1)


def column_sums(x, w, config: CrossbarConfig) -> np.ndarray:
    """Every conversion's ideal column sum s (before noise and the ADC).

    Args:
        x: (n, K) integers in -127..127 (numpy array or torch tensor).
        w: (K, M) integers in -127..127.
        config: the crossbar.

    Returns:
        (n, T, P, Q, J, S, M) int64, ``s = sum_r chunk_j(x_r^p) * slice_k(w_r^q)`` over the rows of
        tile t. One batched float64 matmul (exact: every sum is below 2^53).
    """
    xa, wa = _as_operands(x, w)
    n, k_dim = xa.shape
    m_dim = wa.shape[1]
    rows, t_dim = config.rows, n_row_tiles(k_dim, config)
    j_dim, s_dim = config.n_chunks, config.n_slices
    if rows * config.cell_max * config.dac_max >= _FLOAT64_EXACT:
        raise ValueError(f"rows = {rows} is too large for exact column sums")
    pad = t_dim * rows - k_dim
    xp = np.pad(xa, ((0, 0), (0, pad))).reshape(n, t_dim, rows)
    wp = np.pad(wa, ((0, pad), (0, 0))).reshape(t_dim, rows, m_dim)
    xc = bit_fields(polarity_split(xp), config.dac_bits, j_dim)  # (P, n, T, R, J)
    ws = bit_fields(polarity_split(wp), config.cell_bits, s_dim)  # (Q, T, R, M, S)
    a = xc.transpose(2, 0, 4, 1, 3).reshape(t_dim, N_POLARITIES * j_dim * n, rows).astype(np.float64)
    b = ws.transpose(1, 2, 0, 4, 3).reshape(t_dim, rows, N_POLARITIES * s_dim * m_dim).astype(np.float64)
    s = np.matmul(a, b).reshape(t_dim, N_POLARITIES, j_dim, n, N_POLARITIES, s_dim, m_dim)
    return s.transpose(3, 0, 1, 4, 2, 5, 6).astype(np.int64)


def conversion_noise(noise: NoiseGenerator, n: int, n_tiles: int, m: int, config: CrossbarConfig) -> np.ndarray:
    """The noise every conversion of an ``mvm`` call adds, in the generator's draw order.

    Args:
        noise: the generator (started from its seed).
        n: input vectors; n_tiles: row tiles; m: output columns.
        config: the crossbar.

    Returns:
        (n, T, P, Q, J, S, M) int64 noise LSBs.
    """
    if m > LANE_TILE_STRIDE:
        raise ValueError(f"noise lanes cover at most {LANE_TILE_STRIDE} columns, not {m}")
    lanes = np.concatenate([lane_ids(t, m) for t in range(n_tiles)])
    j_dim, s_dim = config.n_chunks, config.n_slices
    draws = noise.samples(n * config.conversions_per_vector, lanes)
    draws = draws.reshape(n, N_POLARITIES, N_POLARITIES, j_dim, s_dim, n_tiles, m)
    return draws.transpose(0, 5, 1, 2, 3, 4, 6)


def adc(s: ArrayT, bits, lossless_bits: int, mode: str) -> ArrayT:
    """The per-slice ADC on column sums, vectorized.

    Args:
        s: (...,) integer column sums (noisy sums may be negative), numpy array or torch tensor.
        bits: ADC bits N, an int or an integer array broadcastable to ``s`` (e.g. per slice).
        lossless_bits: L of the crossbar (:func:`~vitforge.quant.crossbar.config.lossless_adc_bits`).
        mode: ``"saturate"``: ``clamp(s, 0, 2^N - 1)``; ``"scaled"``:
            ``clamp(floor(s / 2^(L-N) + 1/2), 0, 2^N - 1) * 2^(L-N)`` (shift ``max(L - N, 0)``).

    Returns:
        (...,) int64 ADC readings in column-sum units, the same kind (numpy/torch) as ``s``.
    """
    if mode not in ("saturate", "scaled"):
        raise ValueError(f"mode must be 'saturate' or 'scaled', not {mode!r}")
    sa = _to_numpy_int(s, "s")
    nb = np.asarray(bits, dtype=np.int64)
    if nb.size and int(nb.min()) < 1:
        raise ValueError(f"ADC bits must be at least 1, not {int(nb.min())}")
    top = (np.int64(1) << nb) - 1
    if mode == "saturate":
        out = np.clip(sa, 0, top)
    else:
        shift = np.maximum(lossless_bits - nb, 0)
        half = np.where(shift > 0, np.int64(1) << np.maximum(shift - 1, 0), 0)
        out = np.clip((sa + half) >> shift, 0, top) << shift
    return _like(np.asarray(out, dtype=np.int64), s)


def adc_slices(s: np.ndarray, config: CrossbarConfig) -> np.ndarray:
    """Apply every slice's ADC to column sums laid out ``(n, T, P, Q, J, S, M)``: same shape, int64."""
    bits = np.asarray(config.slice_adc_bits, dtype=np.int64)[:, None]  # broadcast over (S, M)
    return adc(s, bits, config.lossless_bits, config.adc_mode)


def shift_add(readings: np.ndarray, config: CrossbarConfig) -> np.ndarray:
    """Combine ADC readings: ``y = sum sign * 2^(j*d + k*c) * reading``.

    Args:
        readings: (n, T, P, Q, J, S, M) int64.

    Returns:
        (n, M) int64.
    """
    pol = np.arange(N_POLARITIES)
    sign = np.where(pol[:, None] == pol[None, :], 1, -1).astype(np.int64)  # (P, Q)
    j = np.arange(config.n_chunks, dtype=np.int64)[:, None] * config.dac_bits
    k = np.arange(config.n_slices, dtype=np.int64)[None, :] * config.cell_bits
    weight = np.int64(1) << (j + k)  # (J, S)
    scale = sign[:, :, None, None] * weight[None, None]  # (P, Q, J, S)
    return (readings * scale[None, None, :, :, :, :, None]).sum(axis=(1, 2, 3, 4, 5))


def mvm(x: ArrayT, w, config: CrossbarConfig, noise: NoiseGenerator | None = None) -> ArrayT:
    """The crossbar's matrix product ``y = x @ w`` as the tiles compute it.

    Args:
        x: (n, K) integers in -127..127, numpy array or torch tensor.
        w: (K, M) integers in -127..127.
        config: the crossbar (slicing, ADC bits and mode).
        noise: optional on-chip ADC noise, added to every column sum before its ADC; the
            generator starts from its seed at every call.

    Returns:
        (n, M) int64, a torch tensor if ``x`` is one, else a numpy array. Equal to ``x @ w``
        when ``config.is_lossless`` and there is no noise (or sigma rounds to 0).
    """
    s = column_sums(x, w, config)
    if noise is not None:
        n, t_dim, *_, m_dim = s.shape
        s = s + conversion_noise(noise, n, t_dim, m_dim, config)
    return _like(shift_add(adc_slices(s, config), config), x)
