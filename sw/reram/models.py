"""Models whose layers map onto crossbars: a CIFAR-style ResNet-20 and the demo ViT's linear layers.

``ResNet20`` (He et al. 2016, the CIFAR variant: 3 stages of 3 basic blocks, ``c, 2c, 4c``
channels, 1x1 projection shortcuts where the shape changes) with any base channel count ``c``;
every convolution and the classifier are crossbar layers, BatchNorm stays digital (float, as in
the bit-slice paper). ``vit_on_crossbars`` swaps every ``nn.Linear`` of the demo ViT
(``vitforge.sw.vit``: patch embedding, QKV, projection, MLP, head) for a :class:`CrossbarLinear`
with the same parameters; attention's activation-activation products stay digital.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn
from torch.nn import functional as F

from .layers import CrossbarConv2d, CrossbarLinear

#: ResNet-20: 3 stages of BLOCKS_PER_STAGE basic blocks (depth 6 * 3 + 2).
BLOCKS_PER_STAGE = 3
STAGE_WIDTHS = (1, 2, 4)
STAGE_STRIDES = (1, 2, 2)
MODEL_KINDS = ("resnet20", "vit")


@dataclass(frozen=True)
class ModelConfig:
    """Which model to build.

    Attributes:
        kind: ``"resnet20"`` or ``"vit"`` (the demo ViT preset at the data's geometry).
        channels: ResNet-20's base channel count (>= 1).
        in_chans, num_classes, image_size: the data's geometry.
        per_channel: per-output-channel weight scales (default per tensor).
    """

    kind: str = "resnet20"
    channels: int = 8
    in_chans: int = 1
    num_classes: int = 10
    image_size: int = 32
    per_channel: bool = False

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"model kind must be one of {MODEL_KINDS}, not {self.kind!r}")
        for name in ("channels", "in_chans", "num_classes", "image_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, per_channel: bool) -> None:
        super().__init__()
        self.conv1 = CrossbarConv2d(c_in, c_out, 3, stride, 1, bias=False, per_channel=per_channel)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = CrossbarConv2d(c_out, c_out, 3, 1, 1, bias=False, per_channel=per_channel)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(CrossbarConv2d(c_in, c_out, 1, stride, 0, bias=False,
                                                         per_channel=per_channel), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """CIFAR ResNet-20 on crossbar layers. ``forward(x)``: ``(B, C, H, W)`` float -> ``(B, classes)``."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        self.conv = CrossbarConv2d(cfg.in_chans, c, 3, 1, 1, bias=False, per_channel=cfg.per_channel)
        self.bn = nn.BatchNorm2d(c)
        blocks, c_in = [], c
        for width, stride in zip(STAGE_WIDTHS, STAGE_STRIDES, strict=True):
            for b in range(BLOCKS_PER_STAGE):
                blocks.append(BasicBlock(c_in, c * width, stride if b == 0 else 1, cfg.per_channel))
                c_in = c * width
        self.blocks = nn.Sequential(*blocks)
        self.fc = CrossbarLinear(c_in, cfg.num_classes, per_channel=cfg.per_channel)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        out = F.relu(self.bn(self.conv(x)))
        out = self.blocks(out)
        out = out.mean(dim=(-2, -1))
        return self.fc(out)


def vit_on_crossbars(cfg: ModelConfig) -> nn.Module:
    """The demo ViT preset (at ``cfg``'s geometry) with every ``nn.Linear`` a :class:`CrossbarLinear`.

    The ViT runs in its float mode (exact GELU/softmax/LayerNorm twins off: ``poly=False``), so its
    only quantized arithmetic is the crossbar layers'.
    """
    from dataclasses import replace

    from vitforge.sw.vit import PRESETS, VisionTransformer

    vcfg = replace(PRESETS["demo"], image_size=cfg.image_size, in_chans=cfg.in_chans,
                   num_classes=cfg.num_classes, poly=False)
    model = VisionTransformer(vcfg)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                new = CrossbarLinear(child.in_features, child.out_features, child.bias is not None,
                                     per_channel=cfg.per_channel)
                new.load_state_dict(child.state_dict(), strict=False)
                setattr(parent, name, new)
    return model


def build_model(cfg: ModelConfig) -> nn.Module:
    """The model ``cfg`` names, freshly initialized (seed torch's generator before calling)."""
    if cfg.kind == "resnet20":
        return ResNet20(cfg)
    return vit_on_crossbars(cfg)
