"""Export a QAT model to an int8 artifact directory, and load one back with every check.

Artifact layout (everything below ``DIR``; ``manifest.json`` lists and hashes the rest)::

    manifest.json            model config, hardware preset, numerics, scales, layer list with
                             integer scalars (shifts, multipliers, thresholds), blob table
    tensors/<layer>.<t>.bin  canonical integer tensors, little-endian, row-major (the golden model
                             reads these): weights (in, out) int8, biases int32, multipliers
                             uint16, shifts uint8, LayerNorm gamma int8 / beta int32
    program.bin|hex          the controller's instruction stream (hw/isa.py), compiled by
                             hw/compiler.py (see sw/program.py)
    program/<blob>.bin|hex   the memory images the program LOADs: weights in the weight-scratchpad
                             layout, (bias, mult, shift) parameter words, LayerNorm and SELECT
                             parameter words (hw/controller.py's contracts), constants
    program/loads.json       the LOAD table: per LOAD instruction, in order, the blob, word
                             offset and count the runtime streams into dma_in; input and output
                             shapes; per instruction, its layer (for per-layer cycle counts)

Scratchpad words (hw/config.py): a weight word holds ``lanes`` int8 elements, element ``j`` in
bits ``[8j, 8j+8)``; a ``(in, out)`` matrix is row-major with ``ceil(out/lanes)`` words per row,
padding lanes 0. A parameter word holds ``lanes`` channels, channel ``j`` in bits
``[j*P, (j+1)*P)`` with ``P = 32 + 16 + 6``: int32 bias (two's complement) in the low 32 bits,
then the uint16 multiplier, then the 6-bit shift. ``.bin`` files store each word little-endian in
``ceil(word_bits/8)`` bytes; ``.hex`` files hold one word per line for ``$readmemh`` (most
significant digit first, ``ceil(word_bits/4)`` digits).

The directory is written under a temporary name and renamed into place (``os.replace``), so an
interrupted export leaves no half-written artifact. JSON is written with sorted keys and no
timestamps: the same model gives the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from vitforge.hw import compiler as hwp
from vitforge.hw.config import HwConfig, get_preset
from vitforge.quant.config import NumericsConfig
from vitforge.quant.fake import QuantAdd, QuantLayerNorm, QuantLinear, QuantMatMul
from vitforge.quant.fixed import FixedFormat
from vitforge.quant.quantize import calibrate_scale, quantize

from .artifact import MANIFEST, ArtifactError, Writer, read_blob, read_manifest, read_tensor, write_directory
from .vit import VisionTransformer, ViTConfig

FORMAT = "vitforge-vit-int8"
#: 2: program/loads.json gained the per-instruction ``layers``.
FORMAT_VERSION = 2
@dataclass
class IntModel:
    """An exported model's integer view (what the golden model and the hardware run).

    Attributes:
        config: the model architecture (thresholds included).
        numerics: formats of the nonlinear units.
        input_scale: pixels are quantized as ``quantize(patch, input_scale)``.
        output_scale: logits are int8 codes at this scale.
        layers: per layer name, its integer parameters (tensors int64, scalars int) and ``out_fmt``
            ``(bits, frac, signed)``.
        tensors: ``cls`` ``(D,)`` and ``pos`` ``(N+1, D)`` int8 codes.
        thresholds: selector keep thresholds (Q0.7) by block index.
        scales: every layer's input/output scales (documentation; the integer path does not use them).
    """

    config: ViTConfig
    numerics: NumericsConfig
    input_scale: float
    output_scale: float
    layers: dict[str, dict]
    tensors: dict[str, torch.Tensor]
    thresholds: dict[int, int]
    scales: dict[str, dict] = field(default_factory=dict)


# --- extraction from a QAT model -----------------------------------------------------------------


def _fmt_tuple(fmt: FixedFormat) -> list:
    return [fmt.bits, fmt.frac, fmt.signed]


@torch.no_grad()
def extract(model: VisionTransformer, sample: torch.Tensor) -> IntModel:
    """Integer parameters of a model in ``"qat"`` mode.

    Input scales of every layer are recorded by one forward pass over ``sample`` (a few images,
    ``(B, C, H, W)``); they are static (frozen observers), so any images give the same result.
    """
    model.eval()
    seen: dict[str, tuple] = {}
    hooks = []
    kinds = (QuantLinear, QuantLayerNorm, QuantMatMul, QuantAdd)

    def record(name: str):
        def hook(_mod, args, out) -> None:
            seen.setdefault(name, (args, out[1]))
        return hook

    for name, mod in model.named_modules():
        if isinstance(mod, kinds):
            hooks.append(mod.register_forward_hook(record(name)))
    try:
        model(sample)
    finally:
        for h in hooks:
            h.remove()
    if not model.patch_embed.quantized:
        raise ValueError("export needs a model in 'qat' mode (calibrate and set_mode(model, 'qat') first)")
    layers: dict[str, dict] = {}
    scales: dict[str, dict] = {}
    for name, mod in model.named_modules():
        if not isinstance(mod, kinds):
            continue
        if name not in seen:
            raise ValueError(f"layer {name} did not run in the export forward pass")
        args, out_scale = seen[name]
        entry: dict = {"out_fmt": _fmt_tuple(mod.out_range)}
        if isinstance(mod, QuantLinear):
            p = mod.integer_params(args[1])
            entry.update(kind="linear", w=p["w"].T.contiguous(), b=p["b"], mult=p["mult"], shift=p["shift"])
            scales[name] = {"in": args[1], "out": out_scale}
        elif isinstance(mod, QuantLayerNorm):
            p = mod.integer_params(args[1])
            entry.update(kind="layernorm", gamma=p["gamma"], beta=p["beta"], mult=int(p["mult"]),
                         shift=int(p["shift"]), eps_q=int(p["eps_q"]))
            scales[name] = {"in": args[1], "out": out_scale}
        elif isinstance(mod, QuantMatMul):
            mult, shift = mod.requant_params(args[1], args[3])
            entry.update(kind="matmul", mult=mult, shift=shift)
            scales[name] = {"in_a": args[1], "in_b": args[3], "out": out_scale}
        else:
            ma, mb, shift = mod.requant_params(args[1], args[3])
            entry.update(kind="add", mult_a=ma, mult_b=mb, shift=shift)
            scales[name] = {"in_a": args[1], "in_b": args[3], "out": out_scale}
        layers[name] = entry
    s_pe = model.patch_embed.out_scale
    s_pos = float(calibrate_scale(model.pos_embed.detach(), bits=8, rule="max"))
    tensors = {
        "cls": quantize(model.cls_token.detach(), s_pe, bits=8),
        "pos": quantize(model.pos_embed.detach(), s_pos, bits=8),
    }
    thresholds = {int(b): int(sel.threshold) for b, sel in model.selectors.items()}
    return IntModel(
        config=model.cfg, numerics=model.numerics, input_scale=model.input_quant.observer.scale,
        output_scale=model.head.out_scale, layers=layers, tensors=tensors, thresholds=thresholds, scales=scales,
    )


# --- hardware memory images -----------------------------------------------------------------------

def weight_words(w: torch.Tensor, hw: HwConfig) -> list[int]:
    """``(in, out)`` int8 weights as scratchpad words (hw/compiler.py's layout; see the module docstring)."""
    return hwp.pack_matrix(hw, w)


def param_words(b: torch.Tensor, mult: torch.Tensor, shift: torch.Tensor, hw: HwConfig) -> list[int]:
    """Per-channel (bias, mult, shift) as parameter-scratchpad words (hw/compiler.py's layout)."""
    return hwp.pack_params(hw, b, mult, shift)


def layernorm_param_words(entry: dict, hw: HwConfig) -> list[int]:
    """A LayerNorm's parameter words (hw/controller.py's LAYERNORM contract): per channel lane
    ``bias = beta`` and ``mult`` = gamma as int8 two's complement in its low 8 bits; then one word
    with ``eps_q``, ``mult``, ``shift`` in lane 0."""
    return hwp.layernorm_words(hw, hwp.LayerNorm(entry["gamma"], entry["beta"], entry["mult"], entry["shift"],
                                                 entry["eps_q"]))


# --- writing ------------------------------------------------------------------------------------


def check_fits(cfg: ViTConfig, hw: HwConfig, preset: str, where: str) -> None:
    """Refuse a model that does not fit the hardware preset (``where`` names the file)."""
    problems = []
    if cfg.num_tokens > hw.max_tokens:
        problems.append(f"{cfg.num_tokens} tokens > max_tokens {hw.max_tokens}")
    if cfg.embed_dim > hw.max_embed_dim:
        problems.append(f"embed_dim {cfg.embed_dim} > max_embed_dim {hw.max_embed_dim}")
    if cfg.mlp_dim > hw.max_mlp_dim:
        problems.append(f"mlp_dim {cfg.mlp_dim} > max_mlp_dim {hw.max_mlp_dim}")
    if cfg.num_heads > hw.max_heads:
        problems.append(f"num_heads {cfg.num_heads} > max_heads {hw.max_heads}")
    if cfg.head_dim % hw.lanes:
        problems.append(f"head width {cfg.head_dim} is not a multiple of lanes {hw.lanes}")
    if cfg.selector_blocks and not hw.selector:
        problems.append("the model has token selectors but the hardware builds no selector unit")
    if problems:
        raise ArtifactError(f"{where}: model does not fit hardware preset {preset!r}: " + "; ".join(problems))


def _manifest(im: IntModel, preset: str, hw: HwConfig, w: Writer, program: dict | None) -> dict:
    layers = []
    for name, entry in im.layers.items():
        item = {"name": name, "kind": entry["kind"], "out_fmt": entry["out_fmt"], "scales": im.scales.get(name, {})}
        for key, value in entry.items():
            if key in ("kind", "out_fmt"):
                continue
            if isinstance(value, torch.Tensor):
                item[key] = w.tensor(f"tensors/{name}.{key}.bin", value, key)
            else:
                item[key] = int(value)
        layers.append(item)
    tensors = {k: w.tensor(f"tensors/{k}.bin", v, k) for k, v in im.tensors.items()}
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "model": im.config.to_dict(),
        "hardware": {"preset": preset, "config": hw.to_json()},
        "input_scale": im.input_scale,
        "output_scale": im.output_scale,
        "selectors": {str(b): {"threshold": t, "keep_rate_target": im.config.keep_rates[i]}
                      for i, (b, t) in enumerate(sorted(im.thresholds.items()))},
        "layers": layers,
        "tensors": tensors,
        "program": program,
    }


def write_artifact(im: IntModel, out_dir: str | Path, preset: str = "demo", extra: dict | None = None) -> Path:
    """Write ``im`` as an artifact directory at ``out_dir`` (replaced atomically if it exists).

    ``extra``: JSON-able metadata stored under the manifest's ``extra`` key (e.g. the data set).
    """
    from .program import build_program

    hw = get_preset(preset)
    out_dir = Path(out_dir)
    check_fits(im.config, hw, preset, str(out_dir))
    if hw.numerics != im.numerics:
        raise ArtifactError(f"{out_dir}: the model's numerics differ from hardware preset {preset!r}'s")

    def fill(w: Writer) -> dict:
        manifest = _manifest(im, preset, hw, w, build_program(im, hw, w))
        manifest["extra"] = extra or {}
        return manifest

    return write_directory(out_dir, fill)


# --- loading ------------------------------------------------------------------------------------


def load_artifact(path: str | Path) -> tuple[IntModel, dict]:
    """Load and verify an artifact: every blob's size and SHA-256, the model against the preset.

    Returns the :class:`IntModel` and the parsed manifest. Raises :class:`ArtifactError` naming
    the file at fault.
    """
    root = Path(path)
    mpath = root / MANIFEST
    manifest = read_manifest(root, FORMAT, FORMAT_VERSION)
    blobs = manifest["blobs"]
    for rel in sorted(blobs):
        read_blob(root, rel, blobs)
    try:
        cfg = ViTConfig.from_dict(manifest["model"])
        preset = manifest["hardware"]["preset"]
        hw = get_preset(preset)
        recorded = HwConfig.from_json(manifest["hardware"]["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise ArtifactError(f"{mpath}: invalid model or hardware section ({err})") from None
    if recorded != hw:
        raise ArtifactError(f"{mpath}: hardware config differs from the current preset {preset!r}")
    check_fits(cfg, hw, preset, str(mpath))
    layers = {}
    for item in manifest["layers"]:
        entry = {"kind": item["kind"], "out_fmt": tuple(item["out_fmt"])}
        for key in ("w", "b", "mult", "shift", "gamma", "beta", "mult_a", "mult_b", "eps_q"):
            if key not in item:
                continue
            value = item[key]
            entry[key] = read_tensor(root, value, blobs) if isinstance(value, str) else int(value)
        layers[item["name"]] = entry
    tensors = {k: read_tensor(root, rel, blobs) for k, rel in manifest["tensors"].items()}
    thresholds = {int(b): int(s["threshold"]) for b, s in manifest["selectors"].items()}
    im = IntModel(cfg, hw.numerics, float(manifest["input_scale"]), float(manifest["output_scale"]),
                  layers, tensors, thresholds, {it["name"]: it["scales"] for it in manifest["layers"]})
    return im, manifest
