"""Device noise: the thermal + shot formula at REFERENCE.md's point, RTN, and refused operating points."""

from __future__ import annotations

import math

import pytest
import torch

from vitforge.quant.crossbar import CrossbarConfig
from vitforge.sw.reram.device import (
    BOLTZMANN,
    ELECTRON_CHARGE,
    NoiseConfig,
    OperatingPoint,
    cell_noise,
    read_sigma_siemens,
    rtn_delta_siemens,
)


def test_read_noise_at_the_reference_point():
    # REFERENCE.md: 500 MHz, 350 K, G = Gmax = 1/3 kOhm, V = 0.1 V -> about 0.9 uS
    cfg = CrossbarConfig()
    sigma = float(read_sigma_siemens(torch.tensor(cfg.g_on, dtype=torch.float64), cfg, OperatingPoint(5e8, 350.0)))
    expected = math.sqrt(cfg.g_on * 5e8 * (4 * BOLTZMANN * 350 + 2 * ELECTRON_CHARGE * 0.1)) / 0.1
    assert sigma == pytest.approx(expected, rel=1e-12)
    assert 0.85e-6 < sigma < 0.95e-6


def test_read_noise_grows_with_frequency_and_temperature():
    cfg = CrossbarConfig()
    g = torch.tensor(cfg.g_on, dtype=torch.float64)
    base = float(read_sigma_siemens(g, cfg, OperatingPoint(1e8, 300.0)))
    assert float(read_sigma_siemens(g, cfg, OperatingPoint(4e8, 300.0))) == pytest.approx(2 * base, rel=1e-12)
    assert float(read_sigma_siemens(g, cfg, OperatingPoint(1e8, 400.0))) > base


def test_rtn_amplitude_is_pytorx_formula():
    cfg = CrossbarConfig()
    g = torch.tensor(cfg.g_on, dtype=torch.float64)
    t = cfg.rtn_b * cfg.g_on + cfg.rtn_a
    assert float(rtn_delta_siemens(g, cfg)) == pytest.approx(cfg.g_on * t / (cfg.g_on - t), rel=1e-12)


def test_cell_noise_sources_switch_off():
    cfg = CrossbarConfig(prog_sigma=0.3)
    levels = torch.randint(0, 4, (50, 50), generator=torch.Generator().manual_seed(0))
    off = cell_noise(levels, cfg, NoiseConfig(read=False, programming=False, rtn=False), torch.Generator())
    assert torch.count_nonzero(off.offset) == 0 and torch.count_nonzero(off.var) == 0
    prog = cell_noise(levels, cfg, NoiseConfig(read=False, rtn=False), torch.Generator().manual_seed(1))
    assert float(prog.offset.std()) == pytest.approx(0.3, rel=0.1)  # 2,500 draws: ~1.4% standard error


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"temperature_k": 0.0}, "temperature_k must be > 0 K, not 0.0"),
    ({"temperature_k": -5.0}, "temperature_k must be > 0 K"),
    ({"frequency_hz": 0.0}, "frequency_hz must be > 0 Hz, not 0.0"),
    ({"frequency_hz": float("nan")}, "frequency_hz must be a finite number"),
])
def test_bad_operating_points_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OperatingPoint(**kwargs)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"adc_sigma_lsb": -1.0}, "adc_sigma_lsb .* must be >= 0, not -1.0"),
    ({"prog_sigma": -0.1}, "prog_sigma .* must be >= 0, not -0.1"),
    ({"rtn_probability": 1.5}, r"rtn_probability must be in \[0, 1\], not 1.5"),
])
def test_bad_noise_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NoiseConfig(**kwargs)
