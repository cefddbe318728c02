"""NeuroSim-style area, latency and energy of crossbar tiles and of whole networks on them.

The mapping (a physical ReRAM macro, as DNN+NeuroSim models one): a tile holds ``rows`` x ``cols``
weights; every weight takes ``2 x n_slices`` cells on as many bitlines (weight polarity x slice),
so a tile has ``rows x 2 n_slices cols`` cells. An input vector is applied in ``2 x n_chunks``
reads (input polarity x DAC chunk); in each read every bitline is converted once, by the ADC its
slice has (N_k bits), ``cols_per_adc`` bitlines taking turns on one ADC.

Constants and models (cited; REFERENCE.md):

* SAR ADC area, NeuroSim ``SarADC.cpp``: ``(269 + 109 (N - 1))`` minimum NMOS widths plus
  ``(209 + 73 (N - 1))`` minimum PMOS widths, linear in N. Converted to um^2 with one factor fitted
  so that the 8-bit ADC has ISAAC's 1200 um^2 (MNSIM's reference ADC): an assumption, as NeuroSim's
  own layout rules are not reproduced here.
* SAR ADC latency: ``(N + 1)`` ns per conversion (NeuroSim); bitlines sharing an ADC multiply it.
* SAR ADC energy: ``P x (N + 1) ns`` with ``P = (a N + b) uW x (1 + 1.3e-3 (T - 300))``, 32 nm HP
  ``a = 1.0157``, ``b = 7.6286`` (NeuroSim; its column-dependent term is left out). Sharing does
  not change energy.
* Cell array read energy: every driven cell dissipates ``V^2 G t`` for a read pulse ``t = 1 / f``;
  inputs drive a fraction ``input_activity`` of the rows at ``V`` on average and cells sit at the
  mean conductance ``(g_on + g_off) / 2`` unless given.
* Cell array area: ``CELL_AREA_F2`` F^2 per cell at ``FEATURE_NM`` (a 1T1R-free crossbar's 4 F^2:
  an assumption, stated).

Everything is per tile and per input vector; :func:`network_cost` multiplies by each layer's tiles
and vectors.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from torch import nn

from vitforge.quant.crossbar.config import CrossbarConfig

from .device import OperatingPoint

#: NeuroSim SarADC.cpp: minimum-width NMOS and PMOS transistors of an N-bit SAR ADC.
SAR_NMOS_BASE, SAR_NMOS_PER_BIT = 269, 109
SAR_PMOS_BASE, SAR_PMOS_PER_BIT = 209, 73
#: ISAAC's 8-bit ADC area (um^2, MNSIM's reference), used to convert transistor widths to area.
ISAAC_ADC_BITS, ISAAC_ADC_AREA_UM2 = 8, 1200.0
#: NeuroSim SAR ADC power, 32 nm HP: P = (a N + b) uW, temperature factor 1 + 1.3e-3 (T - 300).
SAR_POWER_A_UW, SAR_POWER_B_UW = 1.0157, 7.6286
SAR_POWER_TEMP_COEF, SAR_POWER_TEMP_REF_K = 1.3e-3, 300.0
#: Conversion time (N + 1) ns.
SAR_NS_PER_BIT, SAR_NS_BASE = 1.0, 1.0
#: Cell area (F^2) and feature size (nm): the ideal crossbar cell at NeuroSim's 32 nm node (assumption).
CELL_AREA_F2, FEATURE_NM = 4.0, 32.0
#: Fraction of the rows an input chunk drives, on average (assumption).
DEFAULT_INPUT_ACTIVITY = 0.5
COMPONENTS = ("adc", "array")
DEFAULT_OP = OperatingPoint()


def sar_transistor_widths(bits: int) -> int:
    """Minimum transistor widths (NMOS + PMOS) of an N-bit SAR ADC."""
    if bits < 1:
        raise ValueError(f"ADC bits must be at least 1, not {bits}")
    return SAR_NMOS_BASE + SAR_NMOS_PER_BIT * (bits - 1) + SAR_PMOS_BASE + SAR_PMOS_PER_BIT * (bits - 1)


#: um^2 per minimum transistor width, fitted to ISAAC's 8-bit ADC.
UM2_PER_WIDTH = ISAAC_ADC_AREA_UM2 / sar_transistor_widths(ISAAC_ADC_BITS)


def sar_area_um2(bits: int) -> float:
    """SAR ADC area, um^2 (linear in N)."""
    return sar_transistor_widths(bits) * UM2_PER_WIDTH


def sar_latency_ns(bits: int) -> float:
    """One conversion, ns: ``N + 1``."""
    return SAR_NS_PER_BIT * bits + SAR_NS_BASE


def sar_energy_pj(bits: int, temperature_k: float = SAR_POWER_TEMP_REF_K) -> float:
    """One conversion, pJ: ``(a N + b) uW x (1 + 1.3e-3 (T - 300)) x (N + 1) ns``."""
    temp_factor = 1 + SAR_POWER_TEMP_COEF * (temperature_k - SAR_POWER_TEMP_REF_K)
    power_uw = (SAR_POWER_A_UW * bits + SAR_POWER_B_UW) * temp_factor
    return power_uw * sar_latency_ns(bits) * 1e-3  # uW x ns = fJ; / 1000 = pJ


@dataclass(frozen=True)
class TileCost:
    """One tile's figures per component (``adc``, ``array``) for one input vector.

    Attributes:
        area_um2, latency_ns, energy_pj: dicts component -> figure.
    """

    area_um2: dict[str, float]
    latency_ns: dict[str, float]
    energy_pj: dict[str, float]

    def total(self) -> dict[str, float]:
        return {"area_um2": sum(self.area_um2.values()), "latency_ns": sum(self.latency_ns.values()),
                "energy_pj": sum(self.energy_pj.values())}

    def to_dict(self) -> dict:
        return {**asdict(self), "total": self.total()}


def tile_cost(cfg: CrossbarConfig, op: OperatingPoint = DEFAULT_OP,
              input_activity: float = DEFAULT_INPUT_ACTIVITY, mean_conductance: float | None = None) -> TileCost:
    """Area, latency and energy of one tile processing one input vector (see the module docstring)."""
    if not 0.0 <= input_activity <= 1.0:
        raise ValueError(f"input_activity must be in [0, 1], not {input_activity!r}")
    g = (cfg.g_on + cfg.g_off) / 2 if mean_conductance is None else mean_conductance
    if not g > 0:
        raise ValueError(f"mean_conductance must be > 0 S, not {g!r}")
    reads = 2 * cfg.n_chunks
    adcs_per_slice = 2 * cfg.cols // cfg.cols_per_adc  # both weight polarities
    bits = cfg.slice_adc_bits
    adc_area = sum(adcs_per_slice * sar_area_um2(b) for b in bits)
    read_latency = max(cfg.cols_per_adc * sar_latency_ns(b) for b in bits)
    adc_energy = reads * sum(2 * cfg.cols * sar_energy_pj(b, op.temperature_k) for b in bits)
    cells = cfg.rows * 2 * cfg.n_slices * cfg.cols
    array_area = cells * CELL_AREA_F2 * (FEATURE_NM * 1e-3) ** 2
    pulse_s = 1.0 / op.frequency_hz
    array_latency = reads * pulse_s * 1e9
    array_energy = reads * cells * input_activity * cfg.read_voltage**2 * g * pulse_s * 1e12
    return TileCost({"adc": adc_area, "array": array_area}, {"adc": reads * read_latency, "array": array_latency},
                    {"adc": adc_energy, "array": array_energy})


def layer_geometry(model: nn.Module, image_shape: tuple[int, int, int]) -> list[dict]:
    """Every crossbar layer's weight matrix ``(K, M)`` and input vectors per image, by one forward pass.

    Args:
        model: a model with crossbar layers (in any mode that runs on float inputs).
        image_shape: ``(C, H, W)`` of one image.
    """
    import torch

    from .layers import CrossbarConv2d, crossbar_layers

    found: list[dict] = []
    hooks = []
    for name, layer in crossbar_layers(model):
        def hook(mod, inp, out, name=name):
            k = mod.weight[0].numel()
            m = mod.weight.shape[0]
            if isinstance(mod, CrossbarConv2d):
                vectors = out.shape[-1] * out.shape[-2]
            else:
                vectors = math.prod(inp[0].shape[:-1])
            found.append({"layer": name, "k": int(k), "m": int(m), "vectors": int(vectors)})
        hooks.append(layer.register_forward_hook(hook))
    modes = {}
    try:
        for n, layer in crossbar_layers(model):
            modes[n] = layer.mode
            layer.mode = "float"
        with torch.no_grad():
            model.eval()
            model(torch.zeros(1, *image_shape))
    finally:
        for h in hooks:
            h.remove()
        for n, layer in crossbar_layers(model):
            layer.mode = modes[n]
    return found


def network_cost(layers: list[dict], cfg: CrossbarConfig, op: OperatingPoint = DEFAULT_OP,
                 input_activity: float = DEFAULT_INPUT_ACTIVITY) -> dict:
    """Tiles, area, latency and energy per image of a network's layers (from :func:`layer_geometry`).

    Each layer takes ``ceil(K / rows) x ceil(M / cols)`` tiles (weights stay resident: area adds
    up over layers); its vectors run one after another on its tiles (the tiles of a layer work in
    parallel), layers one after another; energy adds up over every tile and vector.
    """
    tc = tile_cost(cfg, op, input_activity)
    rows = []
    for ly in layers:
        tiles = math.ceil(ly["k"] / cfg.rows) * math.ceil(ly["m"] / cfg.cols)
        rows.append({
            **ly, "tiles": tiles,
            "area_um2": {c: tiles * v for c, v in tc.area_um2.items()},
            "latency_ns": {c: ly["vectors"] * v for c, v in tc.latency_ns.items()},
            "energy_pj": {c: tiles * ly["vectors"] * v for c, v in tc.energy_pj.items()},
        })
    total = {key: {c: sum(r[key][c] for r in rows) for c in COMPONENTS}
             for key in ("area_um2", "latency_ns", "energy_pj")}
    return {"tile": tc.to_dict(), "layers": rows, "total": total, "tiles": sum(r["tiles"] for r in rows)}
