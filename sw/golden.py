"""Integer golden model: runs an exported ViT in pure integer arithmetic, one image at a time.

It uses quant/'s reference operations only (``quant.ops.gemm``, ``quant.nonlinear`` units,
``quant.ops.residual_add``, ``quant.selector``) on the integer parameters of an artifact
(:class:`~.export.IntModel`), removing pruned tokens physically and appending package tokens as
the hardware does. Its int8 logits are what the RTL must reproduce bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vitforge.quant import nonlinear as nl
from vitforge.quant import selector as qsel
from vitforge.quant.fixed import FixedFormat
from vitforge.quant.ops import gemm, residual_add
from vitforge.quant.quantize import quantize

from .export import IntModel
from .vit import patchify


@dataclass
class GoldenStats:
    """What the golden model counted: GEMM MACs and tokens per block, per image."""

    macs: list[int] = field(default_factory=list)
    tokens: list[list[int]] = field(default_factory=list)


class GoldenModel:
    """Integer inference of an :class:`~.export.IntModel`.

    ``logits(image)``: ``image`` ``(C, H, W)`` float -> ``(num_classes,)`` int64 int8 codes
    (scale ``model.output_scale``).
    """

    def __init__(self, model: IntModel) -> None:
        self.m = model
        self.cfg = model.config
        self.n = model.numerics
        self._macs = 0
        #: Per selector of the last run, whether it pruned any token (see :meth:`run_codes`).
        self.pruned: list[bool] = []

    # --- units ------------------------------------------------------------------------------------

    def _fmt(self, name: str) -> FixedFormat:
        return FixedFormat(*self.m.layers[name]["out_fmt"])

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        p = self.m.layers[name]
        self._macs += x.shape[0] * p["w"].shape[0] * p["w"].shape[1]
        return gemm(x, p["w"], p["b"], p["mult"], p["shift"], self._fmt(name))

    def _matmul(self, a: torch.Tensor, b: torch.Tensor, name: str) -> torch.Tensor:
        p = self.m.layers[name]
        self._macs += a.shape[0] * a.shape[1] * b.shape[1]
        return gemm(a, b, None, p["mult"], p["shift"], self._fmt(name))

    def _layernorm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        p = self.m.layers[name]
        return nl.int_layernorm(x, p["gamma"], p["beta"], p["mult"], p["shift"], self._fmt(name), p["eps_q"])

    def _add(self, a: torch.Tensor, b: torch.Tensor, name: str) -> torch.Tensor:
        p = self.m.layers[name]
        return residual_add(a, b, p["mult_a"], p["mult_b"], p["shift"], self._fmt(name))

    def _gelu(self, x: torch.Tensor) -> torch.Tensor:
        return nl.int_gelu(x, self.n.gelu_in, self.n.gelu_out)

    def _softmax(self, x: torch.Tensor) -> torch.Tensor:
        return nl.int_softmax(x, self.n.softmax_in, self.n.softmax_out, self.n.exp_out)

    # --- graph --------------------------------------------------------------------------------------

    def _attention(self, x: torch.Tensor, pre: str) -> torch.Tensor:
        d, hd = self.cfg.embed_dim, self.cfg.head_dim
        qkv = self._linear(x, f"{pre}.qkv")
        heads = []
        for h in range(self.cfg.num_heads):
            q = qkv[:, h * hd:(h + 1) * hd]
            k = qkv[:, d + h * hd:d + (h + 1) * hd]
            v = qkv[:, 2 * d + h * hd:2 * d + (h + 1) * hd]
            p = self._softmax(self._matmul(q, k.T, f"{pre}.qk"))
            heads.append(self._matmul(p, v, f"{pre}.av"))
        return self._linear(torch.cat(heads, dim=1), f"{pre}.proj")

    def _block(self, x: torch.Tensor, i: int) -> torch.Tensor:
        pre = f"blocks.{i}"
        h = self._attention(self._layernorm(x, f"{pre}.norm1"), f"{pre}.attn")
        x = self._add(x, h, f"{pre}.add1")
        h = self._gelu(self._linear(self._layernorm(x, f"{pre}.norm2"), f"{pre}.fc1"))
        return self._add(x, self._linear(h, f"{pre}.fc2"), f"{pre}.add2")

    def _mlp(self, x: torch.Tensor, pre: str, count: int) -> torch.Tensor:
        for j in range(count):
            x = self._linear(x, f"{pre}.linears.{j}")
            if j < count - 1:
                x = self._gelu(x)
        return x

    def _select(self, x: torch.Tensor, b: int) -> torch.Tensor:
        pre = f"selectors.{b}"
        heads, hd = self.cfg.num_heads, self.cfg.head_dim
        scores = []
        for h in range(heads):
            sp = f"{pre}.scorers.{h}"
            z = self._gelu(self._linear(self._layernorm(x[:, h * hd:(h + 1) * hd], f"{sp}.norm"), f"{sp}.mlp1"))
            half = z.shape[1] // 2
            glob = qsel.token_mean(z[:, half:], dim=0)
            z = torch.cat([z[:, :half], glob[None, :].expand(z.shape[0], -1)], dim=1)
            p = self._softmax(self._mlp(z, f"{sp}.mlp2", 3))
            scores.append(p[:, 0])
        a = qsel.token_mean(x.reshape(x.shape[0], heads, hd), dim=-1)
        a = nl.int_sigmoid(self._mlp(a, f"{pre}.weight_mlp", 2), self.n.sigmoid_in, self.n.sigmoid_out)
        tokens, keep, _ = qsel.select_tokens(x, torch.stack(scores, dim=1), a, self.m.thresholds[b])
        self.pruned.append(bool((~keep.bool()).any()))
        return tokens

    def input_codes(self, image: torch.Tensor) -> torch.Tensor:
        """One image ``(C, H, W)`` -> its quantized patches ``(num_patches, in_features)`` (int8 codes):
        what every backend of :mod:`vitforge.sw.runtime` receives."""
        patches = patchify(image[None].to(torch.float32), self.cfg.patch_size)[0]
        return quantize(patches, self.m.input_scale)

    def run(self, image: torch.Tensor) -> tuple[torch.Tensor, int, list[int]]:
        """One image ``(C, H, W)`` -> (int8 logits ``(classes,)``, GEMM MACs, tokens per block)."""
        return self.run_codes(self.input_codes(image))

    def run_codes(self, codes: torch.Tensor) -> tuple[torch.Tensor, int, list[int]]:
        """:meth:`run` from the quantized patches (:meth:`input_codes`). Afterwards :attr:`pruned`
        says, per selector, whether it pruned any token (a selector that prunes exactly one leaves
        the count unchanged: the package token takes its place, and the hardware still builds it)."""
        self._macs = 0
        self.pruned = []
        x = self._linear(codes, "patch_embed")
        x = torch.cat([self.m.tensors["cls"][None, :], x], dim=0)
        x = self._add(x, self.m.tensors["pos"], "pos_add")
        tokens = []
        for i in range(self.cfg.depth):
            if i in self.m.thresholds:
                x = self._select(x, i)
            tokens.append(int(x.shape[0]))
            x = self._block(x, i)
        logits = self._linear(self._layernorm(x[:1], "norm"), "head")[0]
        return logits, self._macs, tokens

    def evaluate(self, images: torch.Tensor, labels: torch.Tensor | None = None,
                 progress: bool = False) -> dict:
        """Logits of every image; top-1 (%) if ``labels``; mean GMACs and tokens per block."""
        from tqdm import tqdm

        logits, stats = [], GoldenStats()
        for img in tqdm(images, desc="golden", disable=not progress, leave=False):
            out, macs, tokens = self.run(img)
            logits.append(out)
            stats.macs.append(macs)
            stats.tokens.append(tokens)
        all_logits = torch.stack(logits)
        result = {
            "logits": all_logits,
            "gmacs": sum(stats.macs) / len(stats.macs) / 1e9,
            "tokens": torch.tensor(stats.tokens, dtype=torch.float64).mean(0).tolist(),
        }
        if labels is not None:
            result["top1"] = 100.0 * float((all_logits.argmax(-1) == labels).to(torch.float64).mean())
        return result
