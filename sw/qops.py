"""Fake-quant pieces the ViT needs beyond quant/fake.py: batched attention products, masked softmax,
token means and the selector's control ops, each with a float twin for the gradient.

Like quant/fake.py, every function takes and returns ``(value, scale)`` pairs: ``scale`` None is
the float path; otherwise ``value`` holds ``codes * scale`` exactly and the codes are computed
with quant/'s integer reference (``quant.ops.gemm_acc``, ``quant.nonlinear.int_softmax``,
``quant.selector``).

Pruned tokens are *masked* here (batched, padded), while the golden model removes them
physically; the two agree bit for bit because every integer reduction over tokens (softmax
max and sum, attention-weighted sums, token means, package token) is order-invariant and the
masked entries contribute exactly zero. The masked softmax relies on the exp unit giving 0 for
the most negative difference; :func:`check_masked_softmax_formats` checks that.
"""

from __future__ import annotations

import torch

from vitforge.quant import nonlinear as nl
from vitforge.quant import selector as qsel
from vitforge.quant.config import NumericsConfig
from vitforge.quant.fake import QuantSoftmax, codes_of, ste, wants_twin
from vitforge.quant.fixed import INT8, FixedFormat, round_shift, saturate

#: Weight of a pruned token in the package token, in real units: ``f + PACKAGE_EPS`` (``f`` in Q0.7,
#: the integer reference adds one code).
PACKAGE_EPS = 2.0**-qsel.SCORE_FMT.frac


def check_masked_softmax_formats(n: NumericsConfig) -> None:
    """The masked softmax needs ``exp`` of the most negative difference to be exactly 0."""
    d_fmt = FixedFormat(n.softmax_in.bits + 1, n.softmax_in.frac)
    low = torch.tensor([n.softmax_in.qmin - n.softmax_in.qmax])
    if int(nl.int_exp(low, d_fmt, n.exp_out)[0]) != 0:
        raise ValueError(
            f"softmax formats {n.softmax_in} -> {n.exp_out} give a non-zero exp for the most negative input; "
            "masked attention would not match physical token removal"
        )


class MaskedSoftmax(QuantSoftmax):
    """Softmax over keys with a per-key token mask ``alive`` ``(B, T)`` (1 = present).

    Float path: ``exp(x - max) * alive / sum`` (differentiable in ``alive``, as DynamicViT's
    attention with policy). Integer path: the row is shifted so that its largest present code
    is the format's maximum and absent codes are the minimum, whose exp is 0: equal, bit for
    bit, to :func:`~vitforge.quant.nonlinear.int_softmax` on the present entries only.
    """

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, in_scale: float | None, alive: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, float | None]:
        if alive is None:
            return super().forward(x, in_scale)
        keys = alive[:, None, None, :].to(x.dtype)
        twin = None
        if wants_twin(self.quantized):
            exp = nl.float_exp if self.poly else torch.exp
            e = exp(x - x.detach().amax(dim=-1, keepdim=True)) * keys
            twin = e / e.sum(dim=-1, keepdim=True)
        if not self.quantized:
            return twin, None
        n = self.numerics
        if in_scale != n.softmax_in.scale:
            raise ValueError(f"softmax takes inputs in {n.softmax_in}, got scale {in_scale}")
        present = keys > 0.5
        c = codes_of(x, n.softmax_in.scale)
        top = c.masked_fill(~present, n.softmax_in.qmin).amax(dim=-1, keepdim=True)
        shifted = torch.where(present, c - top + n.softmax_in.qmax, n.softmax_in.qmin)
        q = nl.int_softmax(shifted, n.softmax_in, n.softmax_out, n.exp_out)
        return ste(q.to(x.dtype) * n.softmax_out.scale, twin), n.softmax_out.scale


def masked_token_mean(x: torch.Tensor, scale: float | None, alive: torch.Tensor) -> torch.Tensor:
    """Mean over present tokens. ``x``: ``(B, T, C)``, ``alive``: ``(B, T)``. Returns ``(B, C)``.

    Integer path: :func:`~vitforge.quant.selector.token_mean` of each image's present tokens,
    computed for the whole batch at once with the same formula (the tests check the two agree).
    """
    w = alive[..., None].to(x.dtype)
    twin = (x * w).sum(dim=1) / w.sum(dim=1).clamp(min=1e-6)
    if scale is None:
        return twin
    present = (alive > 0.5)[..., None]
    codes = codes_of(x, scale) * present
    n = present.sum(dim=1)
    recip = (1 << qsel.MEAN_RECIP_BITS) // n
    q = saturate(round_shift(codes.sum(dim=1) * recip, qsel.MEAN_RECIP_BITS), INT8)
    return ste(q.to(x.dtype) * scale, twin)


def channel_mean(x: torch.Tensor, scale: float | None) -> torch.Tensor:
    """Mean over the last dim (a head's channels): :func:`~vitforge.quant.selector.token_mean`."""
    twin = x.mean(dim=-1)
    if scale is None:
        return twin
    return ste(qsel.token_mean(codes_of(x, scale), dim=-1).to(x.dtype) * scale, twin)


def fuse(scores: torch.Tensor, weights: torch.Tensor, quantized: bool) -> torch.Tensor:
    """Fused keep score ``sum_i s_i a_i / sum_i a_i``. ``scores``/``weights``: ``(B, T, h)``; ``(B, T)``.

    Integer path: :func:`~vitforge.quant.selector.fuse_scores` (Q0.7 scores, Q0.8 weights).
    """
    twin = (scores * weights).sum(dim=-1) / weights.sum(dim=-1).clamp(min=1e-6)
    if not quantized:
        return twin
    s = codes_of(scores, qsel.SCORE_FMT.scale)
    a = codes_of(weights, qsel.WEIGHT_FMT.scale)
    f = qsel.fuse_scores(s.reshape(-1, s.shape[-1]), a.reshape(-1, a.shape[-1])).reshape(s.shape[:-1])
    return ste(f.to(scores.dtype) * qsel.SCORE_FMT.scale, twin)


def threshold_keep(fused: torch.Tensor, alive: torch.Tensor, threshold: int) -> torch.Tensor:
    """Inference decision: keep iff ``fused >= threshold * 2**-7`` among present tokens; class kept.

    ``fused``: ``(B, T)`` real scores (on the Q0.7 grid when quantized). Returns ``(B, T)`` float 0/1.
    """
    codes = torch.floor(fused.detach().to(torch.float64) / qsel.SCORE_FMT.scale + 1e-9)
    keep = (codes >= threshold) & (alive > 0.5)
    keep[:, 0] = True
    return keep.to(fused.dtype)


def package(
    x: torch.Tensor, scale: float | None, fused: torch.Tensor, alive: torch.Tensor, keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Package token: the keep-score-weighted mean of the tokens pruned at this selector.

    Args:
        x: ``(B, T, D)`` tokens; ``fused``: ``(B, T)`` fused scores; ``alive``: ``(B, T)`` present
            before the selector; ``keep``: ``(B, T)`` present after (may carry a straight-through
            gradient).

    Returns:
        ``(B, 1, D)`` package tokens and ``(B, 1)`` their presence (1 iff any token was pruned).
        Integer path: :func:`~vitforge.quant.selector.package_token` on each image's present tokens
        (0 where nothing was pruned).
    """
    w = (fused + PACKAGE_EPS) * alive * (1.0 - keep)
    den = w.sum(dim=1, keepdim=True)
    twin = (w[..., None] * x).sum(dim=1, keepdim=True) / den[..., None].clamp(min=1e-6)
    present = ((alive > 0.5) & (keep < 0.5)).any(dim=1, keepdim=True).to(x.dtype)
    if scale is None:
        return twin, present
    # quant.selector.package_token for the whole batch (same formula; the tests compare them).
    pruned = ((alive > 0.5) & (keep < 0.5)).to(torch.int64)
    wq = (codes_of(fused, qsel.SCORE_FMT.scale) + 1) * pruned
    acc = (wq[..., None] * codes_of(x, scale)).sum(dim=1)
    recip = (1 << qsel.PACKAGE_RECIP_BITS) // wq.sum(dim=1, keepdim=True).clamp(min=1)
    q = saturate(round_shift(acc * recip, qsel.PACKAGE_RECIP_BITS), INT8) * pruned.any(dim=1, keepdim=True)
    return ste(q[:, None, :].to(x.dtype) * scale, twin), present
