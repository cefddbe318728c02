"""``Linear`` and ``Conv2d`` layers that train in float or int8 and evaluate on simulated crossbars.

:class:`CrossbarLinear` and :class:`CrossbarConv2d` subclass ``nn.Linear`` / ``nn.Conv2d`` (same
parameters, so checkpoints keep their keys) and add the int8 mapping of the crossbar:

* weights: symmetric int8 codes, per tensor (the default, as the bit-slice paper's dynamic fixed
  point) or per output channel, scale by the max rule, times the layer's prune ``mask``;
* inputs: symmetric int8 codes at a calibrated per-layer scale ``in_scale`` (signed: the crossbar
  feeds the two polarities separately, as the contract says);
* ``Conv2d`` runs as im2col (``F.unfold``) times the ``(C kh kw, out)`` weight matrix.

Modes (:func:`set_mode`): ``float``; ``calibrate`` (float, records every layer's input range);
``qat`` (fake-quant with straight-through gradients: the plain int8 model); ``noisy`` (``qat`` plus
fresh device noise on the weights at every forward, on a noise-free master copy: ReSNA's training);
``crossbar`` (the simulator of :mod:`.sim` on the integer codes, ideal or noisy, see
:func:`attach`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from vitforge.quant.crossbar.config import MAGNITUDE_MAX, CrossbarConfig
from vitforge.quant.fake import ste

from .device import NoiseConfig, cell_noise
from .sim import Programmed, ReadStats, program, read, weight_slices

Mode = Literal["float", "calibrate", "qat", "noisy", "crossbar"]
MODES = ("float", "calibrate", "qat", "noisy", "crossbar")
#: Smallest scale, for all-zero tensors.
MIN_SCALE = 1e-12
#: Seeds of a layer's generators: seed * SEED_STRIDE + layer * COPY_STRIDE + copy (chips), + READ_OFFSET (reads).
SEED_STRIDE = 1_000_003
COPY_STRIDE = 8
READ_OFFSET = 500_000


def quantize_codes(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric int8 codes ``clamp(floor(x / scale + 1/2), -127, 127)`` (float tensor of integers)."""
    return torch.clamp(torch.floor(x / scale + 0.5), -MAGNITUDE_MAX, MAGNITUDE_MAX)


@dataclass
class Session:
    """One layer's view of a simulated chip: the crossbar, the noise, its generators and statistics.

    Attributes:
        cfg: the crossbar; noise: None for ideal reads.
        chip_seeds: one seed per copy of the layer (the majority vote programs three copies).
        read_generator: draws per-read noise (and the ``noisy`` training mode's weight noise).
        noise_scale: multiplies this layer's noise in the ``noisy`` training mode (ReSNA trains the
            last layer with less).
        stats: per-slice ADC clip counts of this layer's reads.
    """

    cfg: CrossbarConfig
    noise: NoiseConfig | None
    chip_seeds: tuple[int, ...]
    read_generator: torch.Generator
    noise_scale: float = 1.0
    stats: ReadStats = field(default_factory=ReadStats)
    chips: list[Programmed] = field(default_factory=list)


class CrossbarMixin:
    """The int8 mapping and the modes shared by :class:`CrossbarLinear` and :class:`CrossbarConv2d`."""

    weight: nn.Parameter
    bias: nn.Parameter | None

    def _init_crossbar(self, per_channel: bool) -> None:
        self.register_buffer("in_scale", torch.zeros((), dtype=torch.float32))
        self.register_buffer("mask", torch.ones_like(self.weight))
        self.per_channel = per_channel
        self.mode: Mode = "float"
        self.session: Session | None = None

    # -- the int8 view -----------------------------------------------------------------------------
    def weight_matrix(self) -> torch.Tensor:
        """The (masked) float weight as a matrix ``(out, in)`` (convolutions flattened to ``C kh kw``)."""
        return (self.weight * self.mask).flatten(1)

    def weight_scale(self) -> torch.Tensor:
        """Max-rule scale: ``()`` per tensor or ``(out, 1)`` per channel (detached)."""
        w = self.weight_matrix().detach()
        if self.per_channel:
            return (w.abs().amax(dim=1, keepdim=True) / MAGNITUDE_MAX).clamp(min=MIN_SCALE)
        return (w.abs().max() / MAGNITUDE_MAX).clamp(min=MIN_SCALE)

    def weight_codes(self) -> torch.Tensor:
        """int8 codes of the weight, ``(out, in)`` float tensor of integers in -127..127 (no gradient)."""
        return quantize_codes(self.weight_matrix().detach(), self.weight_scale())

    def fake_weight(self) -> torch.Tensor:
        """``codes * scale`` with the float weight's gradient (straight through), ``(out, in)``."""
        w = self.weight_matrix()
        return ste(self.weight_codes() * self.weight_scale(), w)

    def input_scale(self) -> torch.Tensor:
        if float(self.in_scale) <= 0:
            raise ValueError(f"{type(self).__name__}: input scale not calibrated; run the model in 'calibrate' mode")
        return self.in_scale

    def fake_input(self, x: torch.Tensor) -> torch.Tensor:
        s = self.input_scale()
        return ste(quantize_codes(x.detach(), s) * s, x)

    def observe(self, x: torch.Tensor) -> None:
        m = x.detach().abs().max() / MAGNITUDE_MAX if x.numel() else torch.zeros(())
        self.in_scale.copy_(torch.maximum(self.in_scale, m.to(self.in_scale.dtype)))

    # -- noise -------------------------------------------------------------------------------------
    def noisy_weight(self) -> torch.Tensor:
        """``fake_weight`` plus one fresh draw of the device noise mapped onto the weight (ReSNA):
        per cell, its programming variation, one read's noise and the RTN, summed over slices with
        weights ``2^(k c)`` and over the two polarities with their signs, ``(out, in)``."""
        sess = self._session()
        cfg = sess.cfg
        if sess.noise is None:
            return self.fake_weight()
        codes = self.weight_codes()
        levels = weight_slices(codes.T, cfg)  # (2, S, in, out)
        cn = cell_noise(levels, cfg, sess.noise, sess.read_generator)
        draw = cn.offset + cn.var.sqrt() * torch.randn(cn.var.shape, generator=sess.read_generator,
                                                       dtype=cn.var.dtype)
        weights = 2.0 ** (torch.arange(cfg.n_slices, dtype=draw.dtype) * cfg.cell_bits)
        sign = torch.tensor([1.0, -1.0], dtype=draw.dtype)
        eps = torch.einsum("qkim,q,k->mi", draw, sign, weights).to(self.weight.dtype)
        return self.fake_weight() + sess.noise_scale * eps * self.weight_scale()

    def _session(self) -> Session:
        if self.session is None:
            raise ValueError(f"{type(self).__name__} in {self.mode!r} mode needs a crossbar: call attach(model, ...)")
        return self.session

    # -- the crossbar ------------------------------------------------------------------------------
    def crossbar_matmul(self, x2d: torch.Tensor) -> torch.Tensor:
        """``(n, in)`` float inputs -> ``(copies, n, out)`` through the simulated chip(s), dequantized."""
        sess = self._session()
        codes_w = self.weight_codes()
        if not sess.chips:
            for seed in sess.chip_seeds:
                gen = torch.Generator().manual_seed(seed)
                sess.chips.append(program(codes_w.T, sess.cfg, sess.noise, gen if sess.noise else None))
        s_x = self.input_scale()
        codes_x = quantize_codes(x2d.detach(), s_x)
        scale = (s_x * self.weight_scale()).reshape(1, -1) if self.per_channel else s_x * self.weight_scale()
        outs = []
        for chip in sess.chips:
            y = read(codes_x, chip, sess.noise, sess.read_generator, sess.stats)
            outs.append(y.to(x2d.dtype) * scale.to(x2d.dtype))
        return torch.stack(outs)


def _expand_copies(y: torch.Tensor) -> torch.Tensor:
    return y[0] if y.shape[0] == 1 else y


class CrossbarLinear(CrossbarMixin, nn.Linear):
    """``nn.Linear`` on a crossbar (see the module docstring). ``forward(x)``: ``(..., in)`` ->
    ``(..., out)``; in ``crossbar`` mode with several chip copies, ``(copies, ..., out)``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, per_channel: bool = False) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self._init_crossbar(per_channel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "float":
            return F.linear(x, self.weight * self.mask, self.bias)
        if self.mode == "calibrate":
            self.observe(x)
            return F.linear(x, self.weight * self.mask, self.bias)
        if self.mode in ("qat", "noisy"):
            w = self.fake_weight() if self.mode == "qat" else self.noisy_weight()
            return F.linear(self.fake_input(x), w, self.bias)
        lead = x.shape[:-1]
        y = self.crossbar_matmul(x.reshape(-1, x.shape[-1]))
        if self.bias is not None:
            y = y + self.bias
        return _expand_copies(y.reshape(y.shape[0], *lead, self.out_features))


class CrossbarConv2d(CrossbarMixin, nn.Conv2d):
    """``nn.Conv2d`` on a crossbar through im2col. ``forward(x)``: ``(B, C, H, W)`` -> ``(B, out, H', W')``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True, *, per_channel: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        self._init_crossbar(per_channel)

    def _conv(self, x: torch.Tensor, w2d: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, w2d.reshape(self.weight.shape), self.bias, self.stride, self.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "float":
            return self._conv(x, self.weight * self.mask)
        if self.mode == "calibrate":
            self.observe(x)
            return self._conv(x, self.weight * self.mask)
        if self.mode in ("qat", "noisy"):
            w = self.fake_weight() if self.mode == "qat" else self.noisy_weight()
            return self._conv(self.fake_input(x), w)
        b, _, h, w = x.shape
        kh, kw = self.kernel_size
        ho = (h + 2 * self.padding[0] - kh) // self.stride[0] + 1
        wo = (w + 2 * self.padding[1] - kw) // self.stride[1] + 1
        cols = F.unfold(x, self.kernel_size, padding=self.padding, stride=self.stride)  # (B, C kh kw, L)
        y = self.crossbar_matmul(cols.transpose(1, 2).reshape(-1, cols.shape[1]))  # (copies, B L, out)
        if self.bias is not None:
            y = y + self.bias
        y = y.reshape(y.shape[0], b, ho * wo, self.out_channels).transpose(2, 3)
        return _expand_copies(y.reshape(y.shape[0], b, self.out_channels, ho, wo))


CrossbarLayer = CrossbarLinear | CrossbarConv2d


def crossbar_layers(model: nn.Module) -> list[tuple[str, CrossbarLayer]]:
    """The model's crossbar layers with their names, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, CrossbarLinear | CrossbarConv2d)]


def set_mode(model: nn.Module, mode: Mode) -> None:
    """Put every crossbar layer of ``model`` in ``mode``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    for _, layer in crossbar_layers(model):
        layer.mode = mode


def attach(model: nn.Module, cfg: CrossbarConfig, noise: NoiseConfig | None = None, seed: int = 0,
           vote_copies: int = 1, last_layer_noise_scale: float = 1.0) -> list[Session]:
    """Give every crossbar layer a fresh simulated chip (drawn from ``seed``) and return the sessions.

    Args:
        model: a model with crossbar layers.
        cfg: the crossbar; noise: the noise model (None: ideal).
        seed: seeds every chip (programming variation, RTN cells) and every read.
        vote_copies: copies of the last crossbar layer (3: ReSNA's majority vote); its output gets a
            leading copies axis.
        last_layer_noise_scale: the ``noisy`` training mode's noise factor on the last layer.
    """
    if vote_copies not in (1, 3):
        raise ValueError(f"vote_copies must be 1 or 3, not {vote_copies!r}")
    if last_layer_noise_scale < 0:
        raise ValueError(f"last_layer_noise_scale must be >= 0, not {last_layer_noise_scale!r}")
    layers = crossbar_layers(model)
    if not layers:
        raise ValueError("the model has no crossbar layers (CrossbarLinear / CrossbarConv2d)")
    sessions = []
    for i, (_, layer) in enumerate(layers):
        last = i == len(layers) - 1
        copies = vote_copies if last else 1
        base = seed * SEED_STRIDE + i * COPY_STRIDE
        sess = Session(cfg, noise, tuple(base + c for c in range(copies)),
                       torch.Generator().manual_seed(base + READ_OFFSET),
                       noise_scale=last_layer_noise_scale if last else 1.0)
        layer.session = sess
        sessions.append(sess)
    return sessions


def detach_sessions(model: nn.Module) -> None:
    """Forget every layer's chip (weights may change again)."""
    for _, layer in crossbar_layers(model):
        layer.session = None


@torch.no_grad()
def calibrate(model: nn.Module, x: torch.Tensor, batch: int = 256) -> None:
    """Record every crossbar layer's input range over images ``x (n, C, H, W)`` (max rule)."""
    layers = crossbar_layers(model)
    modes = [layer.mode for _, layer in layers]
    for _, layer in layers:
        layer.in_scale.zero_()
        layer.mode = "calibrate"
    was_training = model.training
    model.eval()
    for i in range(0, len(x), batch):
        model(x[i:i + batch])
    model.train(was_training)
    for (_, layer), mode in zip(layers, modes, strict=True):
        layer.mode = mode


def zero_slice_ratios(model: nn.Module, cfg: CrossbarConfig) -> list[float]:
    """Per slice, the fraction of all crossbar weights (every layer) whose slice of ``|w|`` is zero."""
    zeros = torch.zeros(cfg.n_slices, dtype=torch.float64)
    count = 0
    for _, layer in crossbar_layers(model):
        codes = layer.weight_codes().to(torch.int64)
        levels = weight_slices(codes, cfg)
        zeros += ((levels[0] + levels[1]) == 0).flatten(1).sum(1).to(torch.float64)
        count += codes.numel()
    return (zeros / max(count, 1)).tolist()
