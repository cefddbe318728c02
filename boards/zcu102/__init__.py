"""ZCU102 (xczu9eg): the Vivado batch project, the C header of the register map, and the PYNQ host runtime."""
