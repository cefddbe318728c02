"""Amaranth generators of ReRAM bit-slice crossbar tiles (the digital twin and periphery of a macro)."""
