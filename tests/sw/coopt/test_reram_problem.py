"""reram: the ReSNA design space's shapes, rounding, cost, objectives' directions, caching and bad input."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from vitforge.sw.coopt import get_problem, optimize
from vitforge.sw.coopt.reram import (
    ADC_BITS,
    CELL_BITS,
    FREQ_LOG2_GHZ,
    MIN_FIDELITY,
    SIZE_LOG2,
    TEMPERATURES_K,
    Design,
    ReramSetup,
    all_designs,
    cache_sizes,
    clear_memory_cache,
    reram_cost,
    reram_problem,
    steps_at,
)

#: A setup that trains in well under a second (tests only: the accuracies mean little).
TINY = {"float_epochs": 2.0, "resna_epochs": 1.0, "test_images": 48, "max_train": 256}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    clear_memory_cache()
    yield
    clear_memory_cache()
    torch.set_num_threads(threads)


def row(cell_bits=2, size_log2=5, adc_bits=6, freq_log2=0, temperature=300.0) -> np.ndarray:
    return np.array([cell_bits, size_log2, adc_bits, freq_log2, temperature], dtype=np.float64)


def test_shapes_bounds_and_reference_point():
    p = reram_problem(**TINY)
    assert p.dim == 5 and p.num_objectives == 4 and p.name == "reram"
    assert p.bounds == (CELL_BITS, SIZE_LOG2, ADC_BITS, FREQ_LOG2_GHZ, (TEMPERATURES_K[0], TEMPERATURES_K[-1]))
    assert p.integers == (0, 1, 2, 3) and p.categories == {4: TEMPERATURES_K}
    assert p.min_fidelity == MIN_FIDELITY
    # The reference point is worse than every design of the space in area, latency and energy.
    f = p.objectives
    costs = np.array([f.costs(Design.from_row(r)) for r in all_designs()[::5]])
    assert np.all(costs < np.asarray(p.ref_point[1:])) and p.ref_point[0] == 1.0
    assert np.all(costs.max(axis=0) > np.asarray(p.ref_point[1:]) / 1.2)  # and not far from the worst


def test_rounding_to_integer_and_categorical_values():
    p = reram_problem(**TINY)
    x = np.array([[2.4, 5.6, 7.5, -0.4, 337.0], [0.0, 9.0, 99.0, 5.0, 999.0]])
    r = p.round(x)
    np.testing.assert_array_equal(r, [[2, 6, 8, 0, 325.0], [1, 7, 12, 2, 400.0]])
    np.testing.assert_array_equal(p.from_unit(np.array([[0.0] * 5, [1.0] * 5])),
                                  [[1, 5, 3, -3, 300.0], [7, 7, 12, 2, 400.0]])
    d = Design.from_row(r[0])
    assert (d.cell_bits, d.size, d.adc_bits, d.frequency_hz, d.temperature_k) == (2, 64, 8, 1e9, 325.0)


def test_higher_fidelity_costs_more_and_trains_longer():
    s = np.array([0.0, MIN_FIDELITY, 0.3, 0.7, 1.0])
    c = reram_cost(s)
    assert c[0] == c[1] and np.all(np.diff(c[1:]) > 0)
    p = reram_problem(**TINY)
    rel = p.relative_cost(s)
    assert rel[-1] == 1.0 and 0.0 < rel[0] < rel[2] < rel[3] < 1.0
    steps = [steps_at(6.0, v, 1348, 64) for v in s[1:]]
    assert steps == sorted(steps) and steps[0] < steps[-1] and steps[-1] == 6 * 22


def test_costs_move_the_right_way():
    f = reram_problem(**TINY).objectives
    area, lat, energy = np.array([f.costs(Design.from_row(row(adc_bits=b))) for b in (3, 5, 7)]).T
    assert np.all(np.diff(area) > 0) and np.all(np.diff(lat) > 0) and np.all(np.diff(energy) > 0)
    # An ADC wider than the column sum is built lossless: 32 rows of 1-bit cells need 6 bits.
    one_bit = [f.costs(Design.from_row(row(cell_bits=1, adc_bits=b))) for b in (6, 12)]
    assert one_bit[0] == one_bit[1]
    # A faster read clock: shorter pulses, less latency and array energy.
    slow, fast = (f.costs(Design.from_row(row(freq_log2=v))) for v in (-3, 2))
    assert fast[0] == slow[0] and fast[1] < slow[1] and fast[2] < slow[2]
    # Hotter: the same area and latency, more ADC energy.
    cool, hot = (f.costs(Design.from_row(row(temperature=t))) for t in (300.0, 400.0))
    assert cool[:2] == hot[:2] and hot[2] > cool[2]
    # More bits per cell: fewer slices, fewer ADCs and cells.
    assert f.costs(Design.from_row(row(cell_bits=7, adc_bits=12)))[0] < f.costs(Design.from_row(row(cell_bits=1)))[0]


def test_higher_temperature_and_frequency_mean_more_read_noise():
    from vitforge.sw.reram.device import read_sigma_siemens

    def sigma(**kw) -> float:
        d = Design.from_row(row(**kw))
        g = torch.tensor([d.crossbar().g_on], dtype=torch.float64)
        return float(read_sigma_siemens(g, d.crossbar(), d.op()))

    assert sigma(temperature=300.0) < sigma(temperature=350.0) < sigma(temperature=400.0)
    assert sigma(freq_log2=-3) < sigma(freq_log2=0) < sigma(freq_log2=2)
    # Programming variation is a fixed share of the conductance range: more levels, more level steps of it.
    wide, narrow = (Design.from_row(row(cell_bits=c)).crossbar() for c in (7, 2))
    assert wide.prog_sigma > narrow.prog_sigma


def test_more_adc_bits_lose_no_accuracy_and_lossless_equals_int8():
    from vitforge.sw.reram.evaluate import evaluate

    f = reram_problem(**TINY).objectives
    d = Design.from_row(row(cell_bits=7, adc_bits=3))
    model = f.resna_model(d, 40, 4)  # 10 float epochs on the 256 images: well above chance
    data = f.data()
    x, y = data.x_test[:48], data.y_test[:48]
    int8 = evaluate(model, x, y)["top1_mean"]
    accs = {}
    for bits in (3, 12):
        xb = Design.from_row(row(cell_bits=7, adc_bits=bits)).crossbar()
        accs[bits] = evaluate(model, x, y, xb, None)["top1_mean"]  # zero noise
    assert accs[12] == int8  # 12 bits >= L = 12 at 32 rows of 7-bit cells: lossless, exactly the int8 model
    assert accs[12] >= accs[3] and accs[3] < int8


def test_objectives_cached_deterministic_and_shared_training(tmp_path):
    p = reram_problem(cache_dir=str(tmp_path), **TINY)
    x = np.stack([row(adc_bits=4), row(adc_bits=9, size_log2=6), row(adc_bits=4)])
    y = p.evaluate(x, np.array([1.0, 1.0, 1.0]))
    assert y.shape == (3, 4) and np.all((0.0 <= y[:, 0]) & (y[:, 0] <= 1.0))
    np.testing.assert_array_equal(y[0], y[2])
    # One training for the designs that differ in ADC bits and tile size only:
    assert cache_sizes() == {"float": 1, "resna": 1, "errors": 2}
    assert y[1, 1] > y[0, 1]  # more ADC bits (and wider tiles): more area
    low = p.evaluate(x[:1], np.array([0.5]))
    assert cache_sizes()["float"] == 2 and low[0, 1:].tolist() == y[0, 1:].tolist()  # costs do not depend on s
    entries = json.loads((tmp_path / "reram_err_seed0.json").read_text())
    assert len(entries) == 3
    clear_memory_cache()
    again = reram_problem(**TINY).evaluate(x, np.array([1.0, 1.0, 1.0]))  # retrained from scratch
    np.testing.assert_array_equal(again, y)
    clear_memory_cache()
    from_disk = reram_problem(cache_dir=str(tmp_path), **TINY).evaluate(x[:1], np.array([1.0]))
    assert cache_sizes() == {"float": 0, "resna": 0, "errors": 0}  # read from the JSON cache: no training
    assert from_disk[0, 0] == y[0, 0]


def test_the_resna_cache_key_holds_all_that_training_depends_on():
    f = reram_problem(**TINY).objectives
    first = f.resna_model(Design.from_row(row(adc_bits=4, size_log2=5)), 4, 2).state_dict()
    clear_memory_cache()
    other_tile = f.resna_model(Design.from_row(row(adc_bits=9, size_log2=7)), 4, 2).state_dict()
    assert all(torch.equal(first[k], other_tile[k]) for k in first)  # tile and ADC do not enter training
    faster = f.resna_model(Design.from_row(row(adc_bits=4, size_log2=5, freq_log2=2)), 4, 2).state_dict()
    assert not all(torch.equal(first[k], faster[k]) for k in first)  # the operating point does


def test_bad_input_is_refused_with_the_value_named():
    with pytest.raises(ValueError, match=re.escape("cell bits must be an integer in 1..7, not 9")):
        Design.from_row(row(cell_bits=9))
    with pytest.raises(ValueError, match=re.escape("ADC bits must be an integer in 3..12, not 2.5")):
        Design.from_row(row(adc_bits=2.5))
    with pytest.raises(ValueError, match="temperature must be one of"):
        Design.from_row(row(temperature=310.0))
    with pytest.raises(ValueError, match="5 variables"):
        Design.from_row(np.zeros(6))
    with pytest.raises(ValueError, match="test_images must be a positive integer, not 0"):
        ReramSetup(test_images=0)
    with pytest.raises(ValueError, match="float_epochs must be a finite number > 0, not -1"):
        get_problem("reram", float_epochs=-1.0)
    with pytest.raises(ValueError, match=r"unknown reram option\(s\) \['epochs'\]: valid are seed, cache_dir and"):
        get_problem("reram", epochs=3)


def test_a_run_on_the_registered_problem(tmp_path):
    res = optimize("reram", method="random", budget=2.0, seed=0, workers=1, out=tmp_path / "run", n_init=2,
                   problem_options=TINY)
    assert len(res.evaluations) == 2 and all(e.ok for e in res.evaluations)
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["problem"] == {"name": "reram", "options": TINY}
    for e in res.evaluations:
        assert e.fidelity == 1.0 and np.array_equal(np.asarray(e.x), reram_problem(**TINY).round(np.asarray([e.x]))[0])


@pytest.mark.slow
def test_full_fidelity_evaluation_learns_the_digits():
    p = reram_problem()
    y = p.evaluate(np.stack([row(cell_bits=2, adc_bits=6), row(cell_bits=7, adc_bits=3)]), np.array([1.0, 1.0]))
    assert y[0, 0] < 0.2 < 0.5 < y[1, 0]  # 3-bit ADCs on 7-bit cells clip every large column sum
    low = p.evaluate(row(cell_bits=2, adc_bits=6)[None], np.array([MIN_FIDELITY]))
    assert low[0, 0] > y[0, 0]
