"""The simulator against quant/'s crossbar contract: bit for bit without noise, and with the on-chip ADC noise."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from vitforge.quant.crossbar import CrossbarConfig, NoiseGenerator, mvm
from vitforge.sw.reram.device import NoiseConfig, OperatingPoint
from vitforge.sw.reram.sim import ReadStats, compute_dtype, crossbar_mvm, program, read, zero_slice_ratio


@st.composite
def layer_and_config(draw):
    c = draw(st.integers(1, 7))
    d = draw(st.integers(1, 7))
    rows = draw(st.sampled_from([4, 16, 32, 64]))
    n_slices = math.ceil(7 / c)
    mode = draw(st.sampled_from(["saturate", "scaled"]))
    bits = draw(st.one_of(st.none(), st.integers(1, 12), st.tuples(*[st.integers(1, 12)] * n_slices)))
    cfg = CrossbarConfig(rows=rows, cols=8, cell_bits=c, dac_bits=d, adc_bits=bits, adc_mode=mode)
    n, k, m = draw(st.integers(1, 6)), draw(st.integers(1, 70)), draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    lo = draw(st.sampled_from([-127, 0]))  # all-non-negative inputs take the one-polarity path
    x = torch.randint(lo, 128, (n, k), generator=gen)
    w = torch.randint(-127, 128, (k, m), generator=gen)
    return cfg, x, w


@given(layer_and_config())
def test_noise_free_simulator_equals_the_contract(case):
    cfg, x, w = case
    assert torch.equal(crossbar_mvm(x, w, cfg), mvm(x, w, cfg))


@given(layer_and_config())
def test_lossless_adcs_give_the_exact_product(case):
    cfg, x, w = case
    lossless = CrossbarConfig(rows=cfg.rows, cols=cfg.cols, cell_bits=cfg.cell_bits, dac_bits=cfg.dac_bits)
    assert torch.equal(crossbar_mvm(x, w, lossless), x @ w)


@pytest.mark.parametrize("cfg", [
    CrossbarConfig(rows=32, cols=32, cell_bits=2, dac_bits=1, adc_bits=(3, 3, 3, 1)),
    CrossbarConfig(rows=64, cols=16, cell_bits=1, dac_bits=2, adc_bits=(4,) * 6 + (1,), adc_mode="scaled"),
    CrossbarConfig(rows=16, cols=8, cell_bits=3, dac_bits=3, adc_bits=5, adc_mode="scaled"),
])
def test_on_chip_adc_noise_equals_the_contract_bit_for_bit(cfg):
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(-127, 128, (5, 70), generator=gen)
    w = torch.randint(-127, 128, (70, 6), generator=gen)
    noise = NoiseGenerator(seed=12345, sigma_lsb=3.0)
    got = read(x, program(w, cfg), adc_generator=noise).round().to(torch.int64)
    assert torch.equal(got, mvm(x, w, cfg, noise=noise))
    assert not torch.equal(got, mvm(x, w, cfg))  # the noise did something


def test_noisy_reads_are_seeded_and_centred():
    cfg = CrossbarConfig(rows=32, cell_bits=4, dac_bits=1, prog_sigma=0.0, rtn_fraction=0.0)
    noise = NoiseConfig(op=OperatingPoint(5e10, 400.0), programming=False, rtn=False)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 128, (2000, 32), generator=gen)
    w = torch.randint(-127, 128, (32, 4), generator=gen)
    chip = program(w, cfg, noise, torch.Generator().manual_seed(1))
    a = read(x, chip, noise, torch.Generator().manual_seed(2))
    b = read(x, chip, noise, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    exact = (x @ w).to(a.dtype)
    err = a - exact
    assert float(err.std()) > 1.0  # this operating point is noisy
    # unbiased: the mean error is within 4 standard errors of zero (Gaussian read noise, no RTN)
    assert abs(float(err.mean())) < 4 * float(err.std()) / math.sqrt(err.numel())


def test_programming_variation_is_fixed_per_chip():
    cfg = CrossbarConfig(rows=16, cell_bits=2, prog_sigma=0.5)
    noise = NoiseConfig(read=False, rtn=False)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(-127, 128, (8, 40), generator=gen)
    w = torch.randint(-127, 128, (40, 5), generator=gen)
    chip1 = program(w, cfg, noise, torch.Generator().manual_seed(7))
    chip2 = program(w, cfg, noise, torch.Generator().manual_seed(8))
    r = torch.Generator().manual_seed(0)
    assert torch.equal(read(x, chip1, noise, r), read(x, chip1, noise, r))  # no per-read noise: same chip, same result
    assert not torch.equal(read(x, chip1, noise, r), read(x, chip2, noise, r))


def test_clip_rate_and_zero_slices():
    cfg = CrossbarConfig(rows=32, cell_bits=2, adc_bits=1)
    w = torch.full((32, 3), 127)
    x = torch.full((4, 32), 127)
    stats = ReadStats()
    read(x, program(w, cfg), stats=stats)
    assert stats.clip_rate() == [pytest.approx(0.5)] * cfg.n_slices  # the negative-polarity reads are 0
    w = torch.tensor([[0, 1, 4, 127]]).T.repeat(1, 1)
    assert zero_slice_ratio(w, cfg).tolist() == [0.5, 0.5, 0.75, 0.75]


def test_float64_for_large_tiles():
    assert compute_dtype(CrossbarConfig(rows=32), 100) == torch.float32
    assert compute_dtype(CrossbarConfig(rows=2048, cell_bits=7, dac_bits=7), 100) == torch.float64


def test_bad_codes_are_refused():
    cfg = CrossbarConfig()
    with pytest.raises(ValueError, match=r"-127\.\.127"):
        program(torch.tensor([[128]]), cfg)
    with pytest.raises(ValueError, match=r"torch\.Generator"):
        program(torch.tensor([[1]]), cfg, NoiseConfig())
