"""Amaranth generators of ReRAM bit-slice crossbar tiles (the digital twin and periphery of a macro)."""

from .tile import CrossbarTile, input_layout, output_layout, weight_row_layout

__all__ = ["CrossbarTile", "input_layout", "output_layout", "weight_row_layout"]
