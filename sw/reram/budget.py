"""Column budgets: int8 weights whose every column sum a saturating ADC converts without clipping.

A tile's column reads ``s = sum_r chunk_j(x_r) * slice_k(w_r)`` over its rows, for one weight
polarity (the contract, quant/crossbar). DAC chunks are at most ``2^d - 1``, so whatever the
inputs, ``s <= (2^d - 1) * sum_r slice_k(w_r)``. A saturating ``N_k``-bit ADC on slice k therefore
never clips when, for every (row tile, column, weight polarity),

    ``sum_r slice_k(|w_r|) <= B_k = floor((2^N_k - 1) / (2^d - 1))``:

the bit-slice paper's argument (the ADC must cover the largest column sum, all inputs at their
maximum) made a constraint. A model that satisfies it gives on those ADCs exactly what it gives on
lossless ones, bit for bit.

:func:`project_codes` moves int8 codes onto the budgets greedily, most significant slice first.
Lowering slice k of a magnitude ``m = high * 2^((k+1) c) + digit * 2^(k c) + low`` by one step is
done by the nearest such value below ``m``: ``m - low - 1`` (``digit - 1`` at slice k, every lower
slice at its maximum), which costs ``low + 1`` codes, so the cheapest rows of an over-budget group
go first; the lower slices, projected after, pay for what this fills in. Magnitudes only shrink,
signs never change, codes already within budget are kept, and one code per scale (the one that
sets the max-rule scale) is protected, so re-quantizing the projected weights gives the projected
codes again.

:func:`snap_codes` is the sparsity step that may follow: it clears a code's lowest slices when
they hold at most ``snap`` codes (``m -> m - (m mod 2^(k c))``), which adds no nonzero digit
anywhere, so a projected model stays within its budgets.
"""

from __future__ import annotations

import torch
from torch import nn

from vitforge.quant.crossbar.config import MAGNITUDE_MAX, CrossbarConfig

from .layers import CrossbarLayer, crossbar_layers
from .sim import weight_slices

#: Cost of lowering a protected code (never chosen).
PROTECTED = 1 << 20


def slice_budgets(cfg: CrossbarConfig) -> tuple[int | None, ...]:
    """Per slice (least significant first), the largest digit sum per (tile, column, weight polarity)
    that its ADC converts without clipping; None where the ADC is lossless (no budget).

    Raises:
        ValueError: for ``adc_mode="scaled"`` below lossless bits (a scaled ADC drops low bits of
            every sum, so no budget makes it exact).
    """
    out: list[int | None] = []
    full = cfg.rows * cfg.cell_max
    for bits in cfg.slice_adc_bits:
        if bits >= cfg.lossless_bits:
            out.append(None)
            continue
        if cfg.adc_mode != "saturate":
            raise ValueError(f"column budgets need adc_mode 'saturate' (or lossless ADC bits), not {cfg.adc_mode!r}")
        budget = ((1 << bits) - 1) // cfg.dac_max
        out.append(None if budget >= full else budget)
    return tuple(out)


def _grouped(codes: torch.Tensor, cfg: CrossbarConfig) -> tuple[torch.Tensor, int]:
    """``(K, M)`` -> ``(T, rows, M)`` zero-padded row tiles, and T."""
    k, m = codes.shape
    tiles = -(-k // cfg.rows)
    pad = tiles * cfg.rows - k
    if pad:
        codes = torch.cat((codes, codes.new_zeros(pad, m)))
    return codes.reshape(tiles, cfg.rows, m), tiles


def slice_sums(codes: torch.Tensor, cfg: CrossbarConfig) -> torch.Tensor:
    """Digit sums ``(2, n_slices, T, M)`` int64 of int8 codes ``(K, M)`` per (weight polarity
    [positive, negative], slice, row tile, column)."""
    levels = weight_slices(codes, cfg)  # (2, S, K, M)
    tiles = -(-codes.shape[0] // cfg.rows)
    pad = tiles * cfg.rows - codes.shape[0]
    if pad:
        levels = torch.nn.functional.pad(levels, (0, 0, 0, pad))
    return levels.reshape(2, cfg.n_slices, tiles, cfg.rows, -1).sum(3)


def budget_excess(codes: torch.Tensor, cfg: CrossbarConfig) -> int:
    """Total digit sum above the budgets of ``cfg``'s ADCs over every group of codes ``(K, M)``;
    0 means no input can make an ADC clip."""
    sums = slice_sums(codes, cfg)
    total = 0
    for k, b in enumerate(slice_budgets(cfg)):
        if b is not None:
            total += int((sums[:, k] - b).clamp(min=0).sum())
    return total


def scale_keepers(weights: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """``(K, M)`` bool: the weight of largest magnitude per tensor (or per column, ``per_channel``),
    the one that sets the max-rule scale. Pass the float weights: among codes tied at 127 only
    the float maximum sets the scale."""
    codes = weights
    mag = weights.abs()
    keep = torch.zeros(codes.shape, dtype=torch.bool)
    if per_channel:
        keep[mag.argmax(0), torch.arange(codes.shape[1])] = True
    else:
        flat = int(mag.argmax())
        keep[flat // codes.shape[1], flat % codes.shape[1]] = True
    return keep


def project_codes(codes: torch.Tensor, cfg: CrossbarConfig, protect: torch.Tensor | None = None) -> torch.Tensor:
    """int8 codes ``(K, M)`` (rows of the crossbar x columns) moved onto ``cfg``'s column budgets.

    Args:
        codes: ``(K, M)`` integers in -127..127 (int or integer-valued float tensor).
        cfg: the crossbar: rows per tile, cell and DAC bits, ADC bits per slice (saturate).
        protect: ``(K, M)`` bool, codes never lowered (None: none).

    Returns:
        ``(K, M)`` int64 codes with ``budget_excess(out, cfg) == 0``, ``|out| <= |codes|``, the same
        signs (or zero), equal to ``codes`` wherever every group they belong to was within budget.

    Raises:
        ValueError: when the protected codes alone exceed a budget.
    """
    codes = torch.as_tensor(codes)
    if codes.dim() != 2:
        raise ValueError(f"codes must be a (K, M) matrix, got shape {tuple(codes.shape)}")
    codes = codes.to(torch.int64)
    if codes.numel() and int(codes.abs().max()) > MAGNITUDE_MAX:
        raise ValueError(f"codes must be in -{MAGNITUDE_MAX}..{MAGNITUDE_MAX}, got |max| {int(codes.abs().max())}")
    budgets = slice_budgets(cfg)
    if all(b is None for b in budgets):
        return codes.clone()
    k_rows, m_cols = codes.shape
    sign = torch.sign(codes)
    mags = torch.stack((codes.clamp(min=0), (-codes).clamp(min=0)))  # (2, K, M): one polarity is zero
    mags, tiles = _grouped(mags.permute(1, 0, 2).reshape(k_rows, 2 * m_cols), cfg)  # (T, rows, 2 M): (polarity, m)
    if protect is None:
        locked = torch.zeros_like(mags, dtype=torch.bool)
    else:
        prot = torch.as_tensor(protect, dtype=torch.bool)
        if prot.shape != codes.shape:
            raise ValueError(f"protect must have the codes' shape {tuple(codes.shape)}, not {tuple(prot.shape)}")
        locked, _ = _grouped(prot.repeat(1, 2), cfg)
    for k in reversed(range(cfg.n_slices)):
        budget = budgets[k]
        if budget is None:
            continue
        shift = k * cfg.cell_bits
        low_mask = (1 << shift) - 1
        while True:
            digit = (mags >> shift) & cfg.cell_max
            excess = digit.sum(1) - budget  # (T, 2 M)
            over = excess > 0
            if not bool(over.any()):
                break
            cost = torch.where((digit > 0) & ~locked, mags & low_mask, torch.full_like(mags, PROTECTED))
            best_cost, best_row = cost.min(1)  # (T, 2 M)
            if bool((over & (best_cost >= PROTECTED)).any()):
                raise ValueError(f"slice {k}'s budget of {budget} (ADC bits {cfg.slice_adc_bits[k]}) is below "
                                 f"what the protected codes alone need")
            chosen = torch.zeros_like(mags, dtype=torch.bool)
            chosen.scatter_(1, best_row[:, None], over[:, None])
            mags = torch.where(chosen, mags - (mags & low_mask) - 1, mags)
    mags = mags.reshape(tiles * cfg.rows, 2, m_cols)[:k_rows]  # (K, 2, M)
    out = mags[:, 0] - mags[:, 1]
    return torch.where(sign == 0, torch.zeros_like(out), out)


def snap_codes(codes: torch.Tensor, cfg: CrossbarConfig, snap: int,
               protect: torch.Tensor | None = None) -> torch.Tensor:
    """Clear the lowest slices of every code whose value there is at most ``snap``.

    For each magnitude ``m``, the largest ``k >= 1`` with ``0 < m mod 2^(k c) <= snap`` is taken and
    ``m -> m - (m mod 2^(k c))``: slices ``0..k-1`` become zero, the others stay. Magnitudes only
    shrink, no slice of any code gains a nonzero digit, so no slice's nonzero count and no
    column's digit sum grows (a projection onto the budgets stays on them).

    Args:
        codes: ``(K, M)`` integer codes in -127..127.
        cfg: the crossbar (its cell bits).
        snap: the largest value cleared, ``>= 0`` (0: nothing changes).
        protect: ``(K, M)`` bool, codes kept as they are (None: none).

    Returns:
        ``(K, M)`` int64 codes.
    """
    if isinstance(snap, bool) or not isinstance(snap, int) or snap < 0:
        raise ValueError(f"snap must be an integer >= 0, not {snap!r}")
    codes = torch.as_tensor(codes).to(torch.int64)
    mag = codes.abs()
    cut = torch.zeros_like(mag)
    for k in range(1, cfg.n_slices):
        low = mag & ((1 << (k * cfg.cell_bits)) - 1)
        cut = torch.where((low > 0) & (low <= snap), low, cut)  # larger k wins: more slices cleared
    if protect is not None:
        cut = torch.where(torch.as_tensor(protect, dtype=torch.bool), torch.zeros_like(cut), cut)
    return torch.sign(codes) * (mag - cut)


@torch.no_grad()
def snap_layer(layer: CrossbarLayer, cfg: CrossbarConfig, snap: int) -> int:
    """:func:`snap_codes` on ``layer`` in place (the scale stays); the number of codes changed."""
    codes = layer.weight_codes().to(torch.int64)
    keep = scale_keepers(layer.weight_matrix().detach().T, layer.per_channel).T
    return _set_codes(layer, codes, snap_codes(codes, cfg, snap, keep))


def _set_codes(layer: CrossbarLayer, codes: torch.Tensor, new: torch.Tensor) -> int:
    changed = new != codes
    n = int(changed.sum())
    if n:
        target = (new.to(layer.weight.dtype) * layer.weight_scale()).reshape(layer.weight.shape)
        layer.weight.copy_(torch.where(changed.reshape(layer.weight.shape), target, layer.weight))
    return n


@torch.no_grad()
def project_layer(layer: CrossbarLayer, cfg: CrossbarConfig) -> int:
    """Project ``layer``'s int8 codes onto ``cfg``'s budgets in place (the changed weights become
    ``code * scale`` exactly; the scale stays); the number of codes changed."""
    codes = layer.weight_codes().to(torch.int64)  # (out, in)
    keep = scale_keepers(layer.weight_matrix().detach().T, layer.per_channel)
    return _set_codes(layer, codes, project_codes(codes.T, cfg, keep).T)


def project_model(model: nn.Module, cfg: CrossbarConfig, snap: int = 0) -> int:
    """:func:`project_layer` on every crossbar layer of ``model`` (budgets where ``cfg``'s ADCs have
    them), then :func:`snap_layer` when ``snap > 0``; the codes changed in all."""
    n = 0
    budgeted = any(b is not None for b in slice_budgets(cfg))
    for _, layer in crossbar_layers(model):
        if budgeted:
            n += project_layer(layer, cfg)
        if snap:
            n += snap_layer(layer, cfg, snap)
    return n


def model_budget_excess(model: nn.Module, cfg: CrossbarConfig) -> int:
    """:func:`budget_excess` summed over ``model``'s crossbar layers (their ``(in, out)`` codes)."""
    return sum(budget_excess(layer.weight_codes().to(torch.int64).T, cfg) for _, layer in crossbar_layers(model))
