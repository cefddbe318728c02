"""ReRAM bit-slice crossbars: the integer contract, its configuration and the on-chip ADC noise.

``from vitforge.quant.crossbar import CrossbarConfig, mvm, adc, lossless_adc_bits, NoiseGenerator``.
See :mod:`.contract` for the contract and :mod:`.noise` for the noise generator's definition.
"""

from .config import ADC_MODES, MAGNITUDE_BITS, MAGNITUDE_MAX, CrossbarConfig, lossless_adc_bits
from .contract import adc, adc_slices, bit_fields, column_sums, conversion_noise, mvm, polarity_split, shift_add
from .noise import G_RAW_STD, MAX_SIGMA_LSB, NOISE_MAX, NoiseGenerator, initial_state, lane_ids, xorshift32

__all__ = [
    "ADC_MODES",
    "G_RAW_STD",
    "MAGNITUDE_BITS",
    "MAGNITUDE_MAX",
    "MAX_SIGMA_LSB",
    "NOISE_MAX",
    "CrossbarConfig",
    "NoiseGenerator",
    "adc",
    "adc_slices",
    "bit_fields",
    "column_sums",
    "conversion_noise",
    "initial_state",
    "lane_ids",
    "lossless_adc_bits",
    "mvm",
    "polarity_split",
    "shift_add",
    "xorshift32",
]
