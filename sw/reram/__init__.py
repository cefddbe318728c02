"""ReRAM crossbar simulation of whole networks: device noise, costs, bit-slice L1 and ReSNA training."""
