"""ViT/DeiT in plain PyTorch, built from quant/fake.py's modules, with HeatViT token selectors.

One model serves every training stage: ``quant.fake.set_mode(model, "float")`` is the float
model (exact nonlinearities, or quant/'s polynomial twins with ``poly=True``), ``"calibrate"``
records activation ranges, ``"qat"`` is 8-bit fake-quant whose forward equals the integer path.

Tokens travel as ``(x, scale, alive)``: ``x: (B, T, D)``, ``scale`` the per-tensor scale (None in
float), ``alive: (B, T)`` presence (1 = present). Pruned tokens are masked (training and batched
evaluation); sw/golden.py removes them physically, as the hardware does, with equal results.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from vitforge.quant.config import DEFAULT_NUMERICS, NumericsConfig
from vitforge.quant.fake import QuantAct, QuantAdd, QuantGELU, QuantLayerNorm, QuantLinear, QuantMatMul, ste
from vitforge.quant.quantize import calibrate_scale, quantize

from . import qops
from .selector import DEFAULT_THRESHOLD, Decision, TokenSelector


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of a ViT/DeiT with optional token selectors.

    Attributes:
        image_size, patch_size, in_chans: input geometry (``image_size % patch_size == 0``).
        num_classes: classifier outputs.
        embed_dim, depth, num_heads, mlp_ratio: the transformer.
        poly: use quant/'s polynomial twins for GELU/softmax/sigmoid (the hardware's functions).
        selector_blocks: a selector runs before each of these blocks (strictly increasing, >= 1).
        keep_rates: cumulative keep-rate targets of the selectors (non-increasing, in (0, 1]).
        thresholds: inference keep thresholds (Q0.7 codes), one per selector.
    """

    image_size: int = 32
    patch_size: int = 4
    in_chans: int = 1
    num_classes: int = 10
    embed_dim: int = 64
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 2.0
    poly: bool = True
    selector_blocks: tuple[int, ...] = ()
    keep_rates: tuple[float, ...] = ()
    thresholds: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.depth < 1:
            raise ValueError(f"depth must be positive, not {self.depth}")
        blocks = list(self.selector_blocks)
        if blocks != sorted(set(blocks)) or any(not 1 <= b < self.depth for b in blocks):
            raise ValueError(f"selector_blocks must be increasing in 1..{self.depth - 1}, not {self.selector_blocks}")
        if len(self.keep_rates) != len(blocks):
            raise ValueError(f"{len(blocks)} selectors need {len(blocks)} keep rates, got {self.keep_rates}")
        rates = list(self.keep_rates)
        if any(not 0 < r <= 1 for r in rates) or rates != sorted(rates, reverse=True):
            raise ValueError(f"keep_rates must be non-increasing in (0, 1], not {self.keep_rates}")
        if self.thresholds and len(self.thresholds) != len(blocks):
            raise ValueError(f"{len(blocks)} selectors need {len(blocks)} thresholds, got {self.thresholds}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_tokens(self) -> int:
        """Tokens entering the first block: patches + class token."""
        return self.num_patches + 1

    @property
    def mlp_dim(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def with_selectors(self, blocks: tuple[int, ...], rates: tuple[float, ...],
                       thresholds: tuple[int, ...] | None = None) -> ViTConfig:
        thr = thresholds if thresholds is not None else tuple(DEFAULT_THRESHOLD for _ in blocks)
        return replace(self, selector_blocks=tuple(blocks), keep_rates=tuple(rates), thresholds=tuple(thr))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ViTConfig:
        d = dict(d)
        for k in ("selector_blocks", "keep_rates", "thresholds"):
            d[k] = tuple(d.get(k, ()))
        return cls(**d)


#: Model presets. ``demo`` trains in minutes on 2 CPU cores on the default data; the DeiT presets
#: carry the papers' dimensions (224x224 RGB, 16x16 patches, 1000 classes).
PRESETS: dict[str, ViTConfig] = {
    "demo": ViTConfig(),
    "deit-tiny": ViTConfig(224, 16, 3, 1000, 192, 12, 3, 4.0),
    "deit-small": ViTConfig(224, 16, 3, 1000, 384, 12, 6, 4.0),
    "deit-base": ViTConfig(224, 16, 3, 1000, 768, 12, 12, 4.0),
}


def get_config(name: str) -> ViTConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, N, C*patch*patch)``, patches row-major, features (c, y, x)."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // patch) * (w // patch), c * patch * patch)


class ParamQuant(nn.Module):
    """Fake-quantizes a parameter tensor at a per-tensor (max) scale or at a given scale."""

    @staticmethod
    def apply(p: torch.Tensor, scale: float | None = None) -> tuple[torch.Tensor, float]:
        s = float(calibrate_scale(p.detach(), bits=8, rule="max")) if scale is None else scale
        return ste(quantize(p.detach(), s, bits=8).to(p.dtype) * s, p), s


class Attention(nn.Module):
    def __init__(self, cfg: ViTConfig, numerics: NumericsConfig) -> None:
        super().__init__()
        self.heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.qkv = QuantLinear(cfg.embed_dim, 3 * cfg.embed_dim)
        self.qk = QuantMatMul(out_fmt=numerics.softmax_in, gain=1.0 / math.sqrt(cfg.head_dim))
        self.softmax = qops.MaskedSoftmax(numerics, poly=cfg.poly)
        self.av = QuantMatMul()
        self.proj = QuantLinear(cfg.embed_dim, cfg.embed_dim)

    def fused(self, alive: torch.Tensor | None) -> bool:
        """Whether the core ``softmax(q k^T / sqrt(d)) v`` runs as one fused kernel
        (``scaled_dot_product_attention``): float mode (no observer records, nothing quantized),
        exact softmax and no token mask. Its value equals the three-module path's up to float
        rounding; its gradient is that of the same function."""
        return (alive is None and not self.softmax.poly
                and all(m.mode == "float" for m in (self.qk, self.softmax, self.av)))

    def forward(self, x: torch.Tensor, s: float | None, alive: torch.Tensor | None):
        b, t, d = x.shape
        qkv, qs = self.qkv(x, s)
        qkv = qkv.reshape(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.fused(alive):
            o, os_ = F.scaled_dot_product_attention(q, k, v, scale=self.qk.gain), None
        else:
            a, a_s = self.qk(q, qs, k.transpose(-2, -1), qs)
            p, ps = self.softmax(a, a_s, alive)
            o, os_ = self.av(p, ps, v, qs)
        o = o.transpose(1, 2).reshape(b, t, d)
        return self.proj(o, os_)


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig, numerics: NumericsConfig) -> None:
        super().__init__()
        self.norm1 = QuantLayerNorm(cfg.embed_dim)
        self.attn = Attention(cfg, numerics)
        self.add1 = QuantAdd()
        self.norm2 = QuantLayerNorm(cfg.embed_dim)
        self.fc1 = QuantLinear(cfg.embed_dim, cfg.mlp_dim, out_fmt=numerics.gelu_in)
        self.gelu = QuantGELU(numerics, poly=cfg.poly)
        self.fc2 = QuantLinear(cfg.mlp_dim, cfg.embed_dim)
        self.add2 = QuantAdd()

    def forward(self, x: torch.Tensor, s: float | None, alive: torch.Tensor | None):
        h, hs = self.norm1(x, s)
        h, hs = self.attn(h, hs, alive)
        x, s = self.add1(x, s, h, hs)
        h, hs = self.norm2(x, s)
        h, hs = self.fc1(h, hs)
        h, hs = self.gelu(h, hs)
        h, hs = self.fc2(h, hs)
        return self.add2(x, s, h, hs)


@dataclass
class Trace:
    """What a forward pass saw: per-selector presence masks and fused scores, final tokens."""

    alive: list[torch.Tensor] = field(default_factory=list)
    fused: list[torch.Tensor] = field(default_factory=list)
    tokens: torch.Tensor | None = None


class VisionTransformer(nn.Module):
    """ViT/DeiT classifier with HeatViT selectors before ``cfg.selector_blocks``.

    ``forward(images)``: ``images`` ``(B, C, H, W)`` float -> logits ``(B, num_classes)`` (on the
    int8 output grid in ``"qat"`` mode). ``forward(images, trace=Trace())`` also records masks.
    """

    def __init__(self, cfg: ViTConfig, numerics: NumericsConfig = DEFAULT_NUMERICS) -> None:
        super().__init__()
        qops.check_masked_softmax_formats(numerics)
        self.cfg = cfg
        self.numerics = numerics
        d = cfg.embed_dim
        self.input_quant = QuantAct()
        self.patch_embed = QuantLinear(cfg.in_chans * cfg.patch_size**2, d)
        self.cls_token = nn.Parameter(torch.zeros(d))
        self.pos_embed = nn.Parameter(torch.randn(cfg.num_tokens, d) * 0.02)
        self.pos_add = QuantAdd()
        self.blocks = nn.ModuleList(Block(cfg, numerics) for _ in range(cfg.depth))
        thresholds = cfg.thresholds or tuple(DEFAULT_THRESHOLD for _ in cfg.selector_blocks)
        self.selectors = nn.ModuleDict({
            str(b): TokenSelector(d, cfg.num_heads, numerics=numerics, poly=cfg.poly, threshold=thr)
            for b, thr in zip(cfg.selector_blocks, thresholds, strict=True)
        })
        self.norm = QuantLayerNorm(d)
        self.head = QuantLinear(d, cfg.num_classes)
        #: Selectors in use, in order (stage 2 inserts them one by one).
        self.active_selectors = len(cfg.selector_blocks)
        nn.init.normal_(self.cls_token, std=0.02)
        self._init()

    def _init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def set_poly(self, poly: bool) -> None:
        """Use quant/'s polynomial twins (True) or the exact float functions (False)."""
        for m in self.modules():
            if hasattr(m, "poly"):
                m.poly = poly

    def set_decision(self, decision: Decision) -> None:
        for sel in self.selectors.values():
            sel.decision = decision

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, float | None]:
        """Patch embedding, class token and position embedding: ``(B, N+1, D)``."""
        x, s = self.input_quant(patchify(images, self.cfg.patch_size))
        x, s = self.patch_embed(x, s)
        cls = self.cls_token
        pos = self.pos_embed
        pos_s = None
        if s is not None:
            cls, _ = ParamQuant.apply(cls, s)
            pos, pos_s = ParamQuant.apply(pos)
        x = torch.cat([cls.expand(x.shape[0], 1, -1), x], dim=1)
        return self.pos_add(x, s, pos.expand_as(x), pos_s)

    def forward(self, images: torch.Tensor, trace: Trace | None = None) -> torch.Tensor:
        x, s = self.embed(images)
        alive = torch.ones(x.shape[:2], dtype=x.dtype)
        masked = False
        active = {str(b) for b in self.cfg.selector_blocks[: self.active_selectors]}
        for i, block in enumerate(self.blocks):
            if str(i) in active:
                sel = self.selectors[str(i)]
                x, alive, fused = sel(x, s, alive)
                masked = True
                if trace is not None:
                    trace.alive.append(alive)
                    trace.fused.append(fused)
            x, s = block(x, s, alive if masked else None)
        if trace is not None:
            trace.tokens = x
        x, s = self.norm(x[:, 0], s)
        logits, _ = self.head(x, s)
        return logits
