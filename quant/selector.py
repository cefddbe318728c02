"""Integer reference of the HeatViT token selector's control logic.

The selector's MLPs (per-head scores, head weights) run on the GEMM engine and the nonlinear
units; what is left is control logic, defined here bit for bit:

1. **Fuse** the per-head keep scores with the head weights:
   ``f = floor(sum_i s_i a_i / sum_i a_i)`` per token, ``s`` the keep-class probability of each
   head (softmax output, ``Q0.7``), ``a`` the head weights (sigmoid output, ``Q0.8``); ``f`` is
   in ``Q0.7``. A token whose weights are all 0 gets ``f = 0``.
2. **Decide**: keep a token iff ``f >= threshold`` (``Q0.7``); the class token (index 0) is
   always kept.
3. **Compact**: the kept tokens, in their original order, form a dense matrix.
4. **Package token**: if any token was pruned, append the weighted mean of the pruned tokens,
   weights ``w = f + 1`` (keep-score weighted; the +1 keeps the sum positive):
   ``P = round(sum_j w_j x_j * floor(2**PACKAGE_RECIP_BITS / sum_j w_j))`` per channel.

At a later selector, the previous package token is an ordinary token (it may be pruned and
folded into the next package). :func:`token_mean` is the reduction the selector uses for its
global feature (mean over tokens) and for the head-weight input (mean over a head's channels).
"""

from __future__ import annotations

import torch

from .fixed import INT8, REQUANT_MULT_BITS, FixedFormat, check_int_tensor, round_shift, saturate

#: Keep scores and the fused score are probabilities in Q0.7 (softmax output codes 0..127).
SCORE_FMT = FixedFormat(8, 7)
#: Head weights are sigmoid outputs in Q0.8 (codes 0..255).
WEIGHT_FMT = FixedFormat(8, 8, signed=False)
#: Precision of the package token's reciprocal, floor(2**PACKAGE_RECIP_BITS / sum w).
PACKAGE_RECIP_BITS = 30
#: Precision of the mean's reciprocal, floor(2**MEAN_RECIP_BITS / count). One bit below the
#: requantization multiplier's width, so that the reciprocal (at most ``2**MEAN_RECIP_BITS``, for a
#: count of 1) is a valid GEMM multiplier: a mean is then a GEMM against ones with
#: ``requantize(sum, floor(2**MEAN_RECIP_BITS / n), MEAN_RECIP_BITS)``, bit for bit (hw/isa.py's
#: GEMM ``mean`` flag computes the reciprocal of a dynamic token count in hardware).
MEAN_RECIP_BITS = REQUANT_MULT_BITS - 1


def scorer_dims(head_dim: int) -> tuple[int, ...]:
    """Widths of a selector head's MLP2 (HeatViT/SPViT): ``Linear(d, d/2) -> GELU -> Linear(d/2, d/4)
    -> GELU -> Linear(d/4, 2)`` on one head of width ``d``: ``(d, d/2, d/4, 2)``."""
    return (head_dim, head_dim // 2, head_dim // 4, 2)


def head_weight_dims(heads: int) -> tuple[int, ...]:
    """Widths of the selector's head-weight MLP: ``Linear(h, max(1, h/2)) -> GELU -> Linear(., h)``."""
    return (heads, max(1, heads // 2), heads)


def token_mean(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean of int8 codes along ``dim``: ``round(sum(x) * floor(2**MEAN_RECIP_BITS / n))``.

    Args:
        x: int8 codes, any shape.
        dim: the dimension to reduce (its length ``n`` may change per image).

    Returns:
        int64 int8 codes with ``dim`` removed (same scale as ``x``).
    """
    x = check_int_tensor(x, "token_mean input", INT8)
    n = x.shape[dim]
    recip = (1 << MEAN_RECIP_BITS) // n
    return saturate(round_shift(x.sum(dim=dim) * recip, MEAN_RECIP_BITS), INT8)


def fuse_scores(scores: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Fused keep score per token.

    Args:
        scores: ``(N, h)`` keep probabilities per head, Q0.7 codes in 0..127.
        weights: ``(N, h)`` head weights, Q0.8 codes in 0..255.

    Returns:
        ``(N,)`` int64 fused scores, Q0.7 codes in 0..127.
    """
    s = check_int_tensor(scores, "selector scores", SCORE_FMT)
    a = check_int_tensor(weights, "selector head weights", WEIGHT_FMT)
    if s.shape != a.shape or s.dim() != 2:
        raise ValueError(
            f"scores and head weights must both be (tokens, heads), got {tuple(s.shape)} and {tuple(a.shape)}"
        )
    if bool((s < 0).any()):
        raise ValueError(f"keep scores are probabilities (codes 0..127), got {int(s.min())}")
    num = (s * a).sum(dim=-1)
    den = a.sum(dim=-1)
    return torch.where(den > 0, num // den.clamp(min=1), torch.zeros_like(num))


def keep_mask(fused: torch.Tensor, threshold: int) -> torch.Tensor:
    """``(N,) bool``: keep iff ``fused >= threshold`` (Q0.7, 0..127); token 0 (class) always kept."""
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not 0 <= threshold <= SCORE_FMT.qmax:
        raise ValueError(f"selector threshold must be a Q0.7 code in 0..{SCORE_FMT.qmax}, not {threshold!r}")
    keep = fused >= threshold
    keep[0] = True
    return keep


def package_token(x: torch.Tensor, fused: torch.Tensor, keep: torch.Tensor) -> torch.Tensor | None:
    """Score-weighted mean of the pruned tokens, or None if nothing was pruned.

    Args:
        x: ``(N, D)`` int8 token codes.
        fused: ``(N,)`` fused scores (Q0.7).
        keep: ``(N,) bool`` keep mask.

    Returns:
        ``(D,)`` int64 int8 codes (the scale of ``x``), or None.
    """
    pruned = ~keep
    if not bool(pruned.any()):
        return None
    w = fused[pruned] + 1
    acc = (w[:, None] * x[pruned]).sum(dim=0)
    recip = (1 << PACKAGE_RECIP_BITS) // w.sum()
    return saturate(round_shift(acc * recip, PACKAGE_RECIP_BITS), INT8)


def select_tokens(
    x: torch.Tensor, scores: torch.Tensor, weights: torch.Tensor, threshold: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The whole selector control step for one image.

    Args:
        x: ``(N, D)`` int8 token codes, class token first.
        scores: ``(N, h)`` per-head keep probabilities (Q0.7).
        weights: ``(N, h)`` head weights (Q0.8).
        threshold: keep threshold (Q0.7 code).

    Returns:
        ``(tokens, keep, fused)``: ``tokens`` is ``(K, D)`` int64 — the kept tokens in order, then
        the package token if any token was pruned (``K = keep.sum() + any pruned``); ``keep`` is
        the ``(N,) bool`` mask; ``fused`` the ``(N,)`` fused scores.
    """
    x = check_int_tensor(x, "selector tokens", INT8)
    if x.dim() != 2 or x.shape[0] != scores.shape[0]:
        raise ValueError(f"tokens {tuple(x.shape)} and scores {tuple(scores.shape)} disagree on the token count")
    fused = fuse_scores(scores, weights)
    keep = keep_mask(fused, threshold)
    kept = x[keep]
    package = package_token(x, fused, keep)
    tokens = kept if package is None else torch.cat([kept, package[None, :]])
    return tokens, keep, fused
