"""The HeatViT token selector (multi-head, SPViT design) as fake-quant modules.

Input tokens ``x: (B, T, D)`` are split into ``h`` heads of width ``d = D/h``. Per head:
``MLP1 = LayerNorm -> Linear(d, d) -> GELU``; the first ``d/2`` outputs are the local feature,
the mean over present tokens of the other ``d/2`` the global feature; ``MLP2 = Linear(d, d/2) ->
GELU -> Linear(d/2, d/4) -> GELU -> Linear(d/4, 2) -> softmax`` gives (keep, prune) scores.
Head weights: the per-token mean of each head's channels ``(B, T, h) -> Linear(h, h2) -> GELU ->
Linear(h2, h) -> sigmoid``. Fused score ``sum_i s_i a_i / sum_i a_i``.

Decisions: in training (``decision="gumbel"``) hard Gumbel-softmax masks with a straight-through
gradient; at inference (``"threshold"``) keep iff the fused score reaches the selector's Q0.7
threshold (quant/selector.py's rule). A token pruned earlier stays pruned; the class token is
always kept; a package token (score-weighted mean of this selector's pruned tokens) is appended
and is an ordinary token for later selectors.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from vitforge.quant.config import DEFAULT_NUMERICS, NumericsConfig
from vitforge.quant.fake import QuantGELU, QuantLayerNorm, QuantLinear, QuantSigmoid, QuantSoftmax
from vitforge.quant.selector import head_weight_dims, scorer_dims

from . import qops

Decision = Literal["gumbel", "threshold"]
#: Default inference threshold: 0.5 in Q0.7.
DEFAULT_THRESHOLD = 64


class _Mlp(nn.Module):
    """Linear layers with GELU between them; the last one requantizes to ``last_fmt``."""

    def __init__(self, dims: list[int], numerics: NumericsConfig, poly: bool, last_fmt) -> None:
        super().__init__()
        n = len(dims) - 1
        self.linears = nn.ModuleList(
            QuantLinear(dims[i], dims[i + 1], out_fmt=numerics.gelu_in if i < n - 1 else last_fmt)
            for i in range(n)
        )
        self.gelus = nn.ModuleList(QuantGELU(numerics, poly=poly) for _ in range(n - 1))

    def forward(self, x: torch.Tensor, s: float | None) -> tuple[torch.Tensor, float | None]:
        for i, lin in enumerate(self.linears):
            x, s = lin(x, s)
            if i < len(self.gelus):
                x, s = self.gelus[i](x, s)
        return x, s


class HeadScorer(nn.Module):
    """One head's keep/prune scorer: ``(B, T, d)`` -> keep probability ``(B, T)``."""

    def __init__(self, d: int, numerics: NumericsConfig, poly: bool) -> None:
        super().__init__()
        if d % 4 or d < 4:
            raise ValueError(f"selector head width must be a positive multiple of 4, not {d}")
        self.norm = QuantLayerNorm(d)
        self.mlp1 = QuantLinear(d, d, out_fmt=numerics.gelu_in)
        self.gelu1 = QuantGELU(numerics, poly=poly)
        self.mlp2 = _Mlp(list(scorer_dims(d)), numerics, poly, numerics.softmax_in)
        self.softmax = QuantSoftmax(numerics, poly=poly)

    def forward(self, x: torch.Tensor, s: float | None, alive: torch.Tensor) -> torch.Tensor:
        h, hs = self.norm(x, s)
        h, hs = self.mlp1(h, hs)
        h, hs = self.gelu1(h, hs)
        half = h.shape[-1] // 2
        glob = qops.masked_token_mean(h[..., half:], hs, alive)
        h = torch.cat([h[..., :half], glob[:, None, :].expand(-1, h.shape[1], -1)], dim=-1)
        logits, ls = self.mlp2(h, hs)
        p, _ = self.softmax(logits, ls)
        return p[..., 0]


class TokenSelector(nn.Module):
    """HeatViT multi-head token selector (see the module docstring).

    Args:
        dim: token width ``D``; heads: ``h`` (``D % h == 0``).
        threshold: inference keep threshold, a Q0.7 code.
    """

    def __init__(
        self, dim: int, heads: int, *, numerics: NumericsConfig = DEFAULT_NUMERICS, poly: bool = True,
        threshold: int = DEFAULT_THRESHOLD,
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"selector dim {dim} must be divisible by its heads {heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.hidden = head_weight_dims(heads)[1]
        self.scorers = nn.ModuleList(HeadScorer(self.head_dim, numerics, poly) for _ in range(heads))
        self.weight_mlp = _Mlp(list(head_weight_dims(heads)), numerics, poly, numerics.sigmoid_in)
        self.sigmoid = QuantSigmoid(numerics, poly=poly)
        self.threshold = threshold
        self.decision: Decision = "gumbel"

    @property
    def quantized(self) -> bool:
        return self.sigmoid.quantized

    def scores(self, x: torch.Tensor, s: float | None, alive: torch.Tensor) -> torch.Tensor:
        """Fused keep scores ``(B, T)`` (on the Q0.7 grid when quantized)."""
        b, t, _ = x.shape
        xh = x.reshape(b, t, self.heads, self.head_dim)
        keep = torch.stack([sc(xh[:, :, i], s, alive) for i, sc in enumerate(self.scorers)], dim=-1)
        a, a_s = self.weight_mlp(qops.channel_mean(xh, s), s)
        a, _ = self.sigmoid(a, a_s)
        return qops.fuse(keep, a, self.quantized)

    def forward(
        self, x: torch.Tensor, s: float | None, alive: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Select tokens.

        Args:
            x: ``(B, T, D)`` tokens (codes * s when quantized); ``alive``: ``(B, T)`` presence.

        Returns:
            ``(x', alive', fused)``: ``x'`` ``(B, T+1, D)`` with the package token appended,
            ``alive'`` ``(B, T+1)``, ``fused`` ``(B, T)`` scores.
        """
        fused = self.scores(x, s, alive)
        x, alive = self.decide(x, s, alive, fused)
        return x, alive, fused

    def decide(self, x: torch.Tensor, s: float | None, alive: torch.Tensor,
               fused: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The keep decision on ``fused`` (:meth:`scores` of ``x``) and the package token:
        ``(x', alive')`` of :meth:`forward`."""
        if self.decision == "gumbel" and self.training:
            p = fused.clamp(1e-6, 1 - 1e-6)
            logits = torch.stack([p.log(), (1 - p).log()], dim=-1)
            hard = nn.functional.gumbel_softmax(logits, tau=1.0, hard=True)[..., 0]
            keep = hard * alive
            keep = torch.cat([torch.ones_like(keep[:, :1]), keep[:, 1:]], dim=1)
        else:
            keep = qops.threshold_keep(fused, alive, self.threshold)
        pkg, pkg_alive = qops.package(x, s, fused, alive, keep)
        return torch.cat([x, pkg], dim=1), torch.cat([keep, pkg_alive], dim=1)
