"""A fast, vectorized simulator of bit-sliced ReRAM crossbars, equal to quant/'s contract without noise.

A weight matrix ``w (K, M)`` (int8 codes) is *programmed* once per simulated chip
(:func:`program`): its magnitudes are cut into ``n_slices`` cell levels per weight polarity, its
rows tiled by ``rows``, and, with noise on, every cell gets its fixed offset (programming
variation, the RTN mean) and its per-read variance (thermal + shot, RTN). An input ``x (n, K)``
(int8 codes) is then read (:func:`read`): its magnitudes are cut into ``n_chunks`` DAC chunks per
input polarity, and **one batched matmul over the row tiles** gives every column sum
``s[t, n, p, j, q, k, m]`` of every (input polarity p, chunk j, weight polarity q, slice k): no
Python loop over slices or chunks. Noise is added in distribution: the read noise of a column is
``sqrt(sum_r chunk_r^2 var_r) * N(0, 1)`` (a second matmul on the squared chunks; the same one when
the DAC has 1 bit, as then ``chunk^2 = chunk``), exact for Gaussian cell noise and moment-matched
for RTN. The ADC rounds, adds its own noise (whole LSBs) and clamps, per slice; the shift-add
``sum sign * 2^(j d + k c) * adc(s)`` is an einsum.

Sums are exact in float32 while every partial sum stays below 2^24 and in float64 otherwise
(:func:`compute_dtype`), so with noise off the result equals ``vitforge.quant.crossbar.mvm`` bit
for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vitforge.quant.crossbar.config import MAGNITUDE_MAX, CrossbarConfig
from vitforge.quant.crossbar.noise import NoiseGenerator, lane_ids

from .device import NoiseConfig, cell_noise

#: float32 holds every integer below 2^24 exactly.
FLOAT32_EXACT = 1 << 24
#: Column sums computed per matmul call at most (bounds the simulator's memory: ~64 MiB of float32).
MAX_SUMS_PER_CALL = 1 << 24


def compute_dtype(cfg: CrossbarConfig, k: int) -> torch.dtype:
    """float32 when every column sum and every output of a ``K = k`` layer is below 2^24, else float64."""
    col_max = cfg.rows * cfg.cell_max * cfg.dac_max
    out_max = MAGNITUDE_MAX * MAGNITUDE_MAX * k
    return torch.float32 if max(col_max, out_max) < FLOAT32_EXACT else torch.float64


def _check_codes(t: torch.Tensor, name: str) -> torch.Tensor:
    if t.dtype.is_floating_point:
        if not torch.equal(t, t.round()):
            raise ValueError(f"{name} must hold integer codes, got non-integer values")
    t = t.to(torch.int64)
    if t.numel() and int(t.abs().max()) > MAGNITUDE_MAX:
        raise ValueError(f"{name} codes must be in -{MAGNITUDE_MAX}..{MAGNITUDE_MAX}, got |max| {int(t.abs().max())}")
    return t


def weight_slices(w: torch.Tensor, cfg: CrossbarConfig) -> torch.Tensor:
    """Cell levels of int8 codes ``w (K, M)``: ``(2, n_slices, K, M)`` int64, [positive, negative]
    polarity, slice k = ``(|w| >> k c) & (2^c - 1)`` (least significant first)."""
    w = _check_codes(torch.as_tensor(w), "w")
    mags = torch.stack((w.clamp(min=0), (-w).clamp(min=0)))
    shifts = torch.arange(cfg.n_slices, dtype=torch.int64) * cfg.cell_bits
    return (mags[:, None] >> shifts[None, :, None, None]) & cfg.cell_max


def input_chunks(x: torch.Tensor, cfg: CrossbarConfig, polarities: int = 2) -> torch.Tensor:
    """DAC chunks of int8 codes ``x (n, K)``: ``(n, polarities, n_chunks, K)`` uint8, [positive,
    negative] polarity (``polarities=1``: the positive one only), chunk j = ``(|x| >> j d) & (2^d - 1)``."""
    x = _check_codes(torch.as_tensor(x), "x")
    pos = x.clamp(min=0).to(torch.uint8)
    mags = pos[:, None] if polarities == 1 else torch.stack((pos, (-x).clamp(min=0).to(torch.uint8)), dim=1)
    chunks = [(mags >> (i * cfg.dac_bits)) & cfg.dac_max for i in range(cfg.n_chunks)]
    return torch.stack(chunks, dim=2)


def zero_slice_ratio(w: torch.Tensor, cfg: CrossbarConfig) -> torch.Tensor:
    """Fraction of the weights whose slice k of ``|w|`` is zero, ``(n_slices,)`` float64."""
    levels = weight_slices(w, cfg)
    mag_levels = levels[0] + levels[1]  # one polarity is zero for every weight
    return (mag_levels == 0).to(torch.float64).flatten(1).mean(1)


@dataclass
class Programmed:
    """A weight matrix on one simulated chip.

    Attributes:
        cfg: the crossbar.
        k, m: the matrix's shape ``(K, M)``.
        tiles: row tiles ``T = ceil(K / rows)``.
        mean: ``(T, rows, 2 * n_slices * M)``: every cell's level plus its fixed offset, columns
            ordered (weight polarity, slice, m); rows past K are zero.
        var: ``(T, rows, 2 * n_slices * M)`` per-read variances, or None without read noise/RTN.
        dtype: the matmul dtype (:func:`compute_dtype`).
    """

    cfg: CrossbarConfig
    k: int
    m: int
    tiles: int
    mean: torch.Tensor
    var: torch.Tensor | None
    dtype: torch.dtype


def _tile_rows(t: torch.Tensor, cfg: CrossbarConfig, tiles: int) -> torch.Tensor:
    """``(..., K)`` -> ``(..., T, rows)``, zero-padded."""
    pad = tiles * cfg.rows - t.shape[-1]
    if pad:
        t = torch.nn.functional.pad(t, (0, pad))
    return t.reshape(*t.shape[:-1], tiles, cfg.rows)


def program(w: torch.Tensor, cfg: CrossbarConfig, noise: NoiseConfig | None = None,
            generator: torch.Generator | None = None) -> Programmed:
    """Program int8 codes ``w (K, M)`` onto tiles, drawing this chip's fixed noise from ``generator``.

    Args:
        w: ``(K, M)`` integer codes in -127..127 (int or integer-valued float).
        cfg: the crossbar.
        noise: None for an ideal chip; else the noise model (a ``generator`` is then required).
        generator: seeds the programming variation and which cells have RTN.
    """
    w = _check_codes(torch.as_tensor(w), "w")
    if w.dim() != 2:
        raise ValueError(f"w must be (K, M), got shape {tuple(w.shape)}")
    k, m = w.shape
    tiles = -(-k // cfg.rows)
    dtype = compute_dtype(cfg, k)
    levels = weight_slices(w, cfg)  # (2, S, K, M)
    mean = levels.to(torch.float64)
    var = None
    if noise is not None:
        if generator is None:
            raise ValueError("a noisy chip needs an explicit torch.Generator")
        cn = cell_noise(levels, cfg, noise, generator)
        mean = mean + cn.offset
        if noise.read or (noise.rtn and cfg.rtn_fraction > 0):
            var = cn.var

    def to_tiles(t: torch.Tensor) -> torch.Tensor:
        t = t.permute(2, 0, 1, 3)  # (K, 2, S, M)
        t = _tile_rows(t.reshape(k, -1).T, cfg, tiles)  # (2SM, T, rows)
        return t.permute(1, 2, 0).contiguous().to(dtype)

    return Programmed(cfg, k, m, tiles, to_tiles(mean), None if var is None else to_tiles(var), dtype)


@dataclass
class ReadStats:
    """ADC statistics accumulated over reads: per slice, conversions and clipped conversions."""

    conversions: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))
    clipped: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float64))

    def add(self, conversions: torch.Tensor, clipped: torch.Tensor) -> None:
        if self.conversions.numel() == 0:
            self.conversions = torch.zeros_like(conversions)
            self.clipped = torch.zeros_like(clipped)
        if self.conversions.shape != conversions.shape:
            return  # a layer of another slice count: per-slice rates only combine like with like
        self.conversions += conversions
        self.clipped += clipped

    def clip_rate(self) -> list[float]:
        """Per slice: the fraction of conversions whose input exceeded the ADC's range."""
        return [float(c / n) if n else 0.0 for c, n in zip(self.clipped, self.conversions, strict=True)]


def _adc_tables(cfg: CrossbarConfig, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Per slice: the ADC's step (``2^(L-N)`` when scaled and N < L, else 1) and top code ``2^N - 1``."""
    big_l = cfg.lossless_bits
    steps, tops = [], []
    for n in cfg.slice_adc_bits:
        shift = max(big_l - n, 0) if cfg.adc_mode == "scaled" else 0
        steps.append(float(1 << shift))
        tops.append(float((1 << n) - 1))
    return torch.tensor(steps, dtype=dtype), torch.tensor(tops, dtype=dtype)


def _input_planes(x: torch.Tensor, cfg: CrossbarConfig, tiles: int, polarities: int) -> torch.Tensor:
    """DAC chunk planes of codes ``x (b, K)`` laid out for the tile matmul: ``(T, b, P J, rows)`` uint8."""
    xt = _tile_rows(x, cfg, tiles).permute(1, 0, 2)  # (T, b, rows)
    mags = [xt.clamp(min=0).to(torch.uint8)]
    if polarities == 2:
        mags.append((-xt).clamp(min=0).to(torch.uint8))
    planes = [(mag >> (i * cfg.dac_bits)) & cfg.dac_max for mag in mags for i in range(cfg.n_chunks)]
    return torch.stack(planes, dim=2)


def _chip_adc_noise(gen: NoiseGenerator, tiles: int, n: int, cfg: CrossbarConfig, m: int,
                    dtype: torch.dtype) -> torch.Tensor:
    """quant/'s on-chip generator's noise for every conversion: ``(T, n, 2, J, 2, S, M)``.

    Each column (lane) draws in the order n, input polarity, weight polarity, chunk, slice.
    """
    per_vector = 4 * cfg.n_chunks * cfg.n_slices
    out = []
    for t in range(tiles):
        d = gen.samples(n * per_vector, lane_ids(t, m))  # (draws, M)
        d = torch.from_numpy(d).reshape(n, 2, 2, cfg.n_chunks, cfg.n_slices, m)
        out.append(d.permute(0, 1, 3, 2, 4, 5))  # (n, p, j, q, k, m)
    return torch.stack(out).to(dtype)


def read(x: torch.Tensor, chip: Programmed, noise: NoiseConfig | None = None,
         generator: torch.Generator | None = None, stats: ReadStats | None = None,
         adc_generator: NoiseGenerator | None = None) -> torch.Tensor:
    """Multiply int8 codes ``x (n, K)`` by a programmed matrix through the crossbar and its ADCs.

    Args:
        x: ``(n, K)`` integer codes in -127..127.
        chip: from :func:`program`.
        noise: per-read noise (the chip's variances and ``adc_sigma_lsb``); None reads ideally.
        generator: draws the per-read noise (required when there is any).
        stats: accumulates per-slice ADC clip counts.
        adc_generator: quant/'s on-chip ADC noise generator instead of Gaussian ADC noise: gives
            the contract's noisy result bit for bit (slow: for tests and single layers).

    Returns:
        ``(n, M)`` in ``chip.dtype``: exact integers without noise (``mvm(x, w, cfg)``).

    A batch without negative inputs skips the negative input polarity's reads when there is no
    ADC noise: their chunks are all zero, so their column sums are exactly 0 (no current, no
    read noise) and read 0.
    """
    cfg = chip.cfg
    x = _check_codes(torch.as_tensor(x), "x")
    if x.dim() != 2 or x.shape[1] != chip.k:
        raise ValueError(f"x must be (n, {chip.k}), got shape {tuple(x.shape)}")
    noisy_reads = noise is not None and chip.var is not None
    adc_sigma = 0.0 if noise is None else noise.adc_sigma_lsb
    adc_noise = adc_generator is not None or adc_sigma > 0
    if (noisy_reads or adc_sigma > 0) and generator is None:
        raise ValueError("noisy reads need an explicit torch.Generator")
    n = x.shape[0]
    j, s, m = cfg.n_chunks, cfg.n_slices, chip.m
    polarities = 2 if adc_noise or bool((x < 0).any()) else 1
    per_vector = chip.tiles * polarities * j * 2 * s * m
    step = n if adc_generator is not None else max(1, MAX_SUMS_PER_CALL // max(per_vector, 1))
    steps, tops = _adc_tables(cfg, chip.dtype)
    steps_b, tops_b = steps[:, None], tops[:, None]
    unit_steps = bool((steps == 1).all())
    weights = torch.cat((chip.mean, chip.var), dim=2) if noisy_reads and cfg.dac_bits == 1 else chip.mean
    sign = torch.tensor([1.0, -1.0], dtype=chip.dtype)
    coef_pj = (sign[:polarities, None] * 2.0 ** (torch.arange(j, dtype=chip.dtype) * cfg.dac_bits)).reshape(-1)
    coef_qk = (sign[:, None] * 2.0 ** (torch.arange(s, dtype=chip.dtype) * cfg.cell_bits)).reshape(-1)
    out = []
    for lo in range(0, n, step):
        planes = _input_planes(x[lo:lo + step], cfg, chip.tiles, polarities).to(chip.dtype)  # (T, b, P J, R)
        b = planes.shape[1]
        sums = torch.bmm(planes.reshape(chip.tiles, -1, cfg.rows), weights)
        if noisy_reads:
            if cfg.dac_bits == 1:  # chunks are 0/1: the squared chunks are the chunks
                sums, var = sums.split(2 * s * m, dim=2)
            else:
                var = torch.bmm(planes.reshape(chip.tiles, -1, cfg.rows).square(), chip.var)
            draw = torch.randn(var.shape, generator=generator, dtype=var.dtype)
            sums = var.clamp_(min=0).sqrt_().mul_(draw).add_(sums)
        sums = sums.reshape(chip.tiles, b, polarities, j, 2, s, m)
        if adc_generator is not None:
            sums = sums + _chip_adc_noise(adc_generator, chip.tiles, b, cfg, m, chip.dtype)
        elif adc_sigma > 0:
            sums = sums + torch.floor(adc_sigma * torch.randn(sums.shape, generator=generator, dtype=sums.dtype) + 0.5)
        # the ADC: round half up (noise-free sums are integers already), clamp to 0..2^N - 1
        if not (unit_steps and not noisy_reads and not adc_noise):
            sums = torch.floor(sums / steps_b + 0.5).clamp_(min=0)
        if stats is not None:
            flat = sums.reshape(-1, s, m)
            clipped = torch.stack([torch.count_nonzero(flat[:, k] > tops[k]) for k in range(s)]).to(torch.float64)
            stats.add(torch.full((s,), float(flat.shape[0] * m), dtype=torch.float64), clipped)
        adc = torch.minimum(sums, tops_b, out=sums) if sums.is_contiguous() else torch.minimum(sums, tops_b)
        if not unit_steps:
            adc.mul_(steps_b)
        # shift-add: contract (weight polarity, slice), then (input polarity, chunk), then tiles
        y = torch.matmul(coef_qk, adc.reshape(-1, 2 * s, m))  # (T b P J, M)
        y = torch.matmul(coef_pj, y.reshape(chip.tiles * b, polarities * j, m))  # (T b, M)
        out.append(y.reshape(chip.tiles, b, m).sum(0))
    if not out:
        return torch.zeros(0, m, dtype=chip.dtype)
    return torch.cat(out)


def crossbar_mvm(x: torch.Tensor, w: torch.Tensor, cfg: CrossbarConfig) -> torch.Tensor:
    """The noise-free simulator on one layer: ``(n, K) x (K, M)`` int8 codes -> ``(n, M)`` int64."""
    return read(x, program(w, cfg)).round().to(torch.int64)
