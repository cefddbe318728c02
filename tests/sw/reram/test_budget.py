"""Column budgets: projected codes never make a saturating ADC clip, and the projection only shrinks magnitudes."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vitforge.quant.crossbar import CrossbarConfig, mvm
from vitforge.sw.reram.budget import (
    budget_excess,
    model_budget_excess,
    project_codes,
    project_layer,
    scale_keepers,
    slice_budgets,
    slice_sums,
    snap_codes,
)
from vitforge.sw.reram.layers import CrossbarLinear
from vitforge.sw.reram.sim import weight_slices

CFG_3331 = CrossbarConfig(rows=8, cols=8, cell_bits=2, dac_bits=1, adc_bits=(3, 3, 3, 1))


def test_slice_budgets():
    assert slice_budgets(CrossbarConfig(rows=32, adc_bits=(3, 3, 3, 1))) == (7, 7, 7, 1)
    # a 2-bit DAC chunk is up to 3: a 3-bit ADC then covers digit sums up to 7 // 3
    assert slice_budgets(CrossbarConfig(rows=32, dac_bits=2, adc_bits=3)) == (2, 2, 2, 2)
    assert slice_budgets(CrossbarConfig(rows=32)) == (None,) * 4
    # 2 rows of 2-bit cells sum to at most 6 < 2^3 - 1: no budget needed
    assert slice_budgets(CrossbarConfig(rows=2, adc_bits=(3, 3, 3, 1))) == (None, None, None, 1)
    with pytest.raises(ValueError, match="column budgets need adc_mode 'saturate'"):
        slice_budgets(CrossbarConfig(rows=32, adc_bits=3, adc_mode="scaled"))


@st.composite
def codes_and_config(draw):
    c = draw(st.integers(1, 3))
    d = draw(st.integers(1, 2))
    rows = draw(st.sampled_from([1, 3, 8, 16]))
    n_slices = math.ceil(7 / c)
    bits = draw(st.tuples(*[st.integers(1, 5)] * n_slices))
    cfg = CrossbarConfig(rows=rows, cols=8, cell_bits=c, dac_bits=d, adc_bits=bits)
    k, m = draw(st.integers(1, 40)), draw(st.integers(1, 6))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    w = torch.randint(-127, 128, (k, m), generator=gen)
    w = torch.where(torch.rand(k, m, generator=gen) < 0.3, torch.zeros_like(w), w)
    x = torch.randint(-127, 128, (5, k), generator=gen)
    x[0] = 127  # every chunk at its maximum: the largest column sums
    x[1] = -127
    return cfg, w, x


@settings(max_examples=60, deadline=None)
@given(codes_and_config())
def test_projected_codes_never_clip_and_only_shrink(case):
    cfg, w, x = case
    p = project_codes(w, cfg)
    assert budget_excess(p, cfg) == 0
    assert bool((p.abs() <= w.abs()).all())
    assert bool(((torch.sign(p) == torch.sign(w)) | (p == 0)).all())
    # with the budgets met the saturating ADCs give exactly x @ w
    assert torch.equal(torch.as_tensor(mvm(x, p, cfg)), x @ p)
    assert torch.equal(project_codes(p, cfg), p)  # nothing left to move


def test_codes_within_budget_are_kept_and_over_budget_ones_clip():
    gen = torch.Generator().manual_seed(1)
    w = torch.randint(-127, 128, (40, 5), generator=gen)
    x = torch.full((1, 40), 127)
    assert budget_excess(w, CFG_3331) > 0
    assert not torch.equal(torch.as_tensor(mvm(x, w, CFG_3331)), x @ w)  # the budget is not vacuous
    p = project_codes(w, CFG_3331)
    # a group within budget keeps its codes: here, column 0 of the first tile set to small values
    small = w.clone()
    small[:8, 0] = torch.tensor([1, -1, 2, 0, 0, -3, 0, 1])
    ps = project_codes(small, CFG_3331)
    assert torch.equal(ps[:8, 0], small[:8, 0])
    assert budget_excess(p, CFG_3331) == 0 == budget_excess(ps, CFG_3331)


def test_the_cheapest_rows_are_lowered_first():
    # slice 3 (bit 6) of one positive column: 64 costs 1 code to clear (-> 63), 100 costs 37
    w = torch.tensor([[100], [64], [0], [0], [0], [0], [0], [0]])
    cfg = CrossbarConfig(rows=8, cols=8, cell_bits=2, adc_bits=(7, 7, 7, 1))
    assert torch.equal(project_codes(w, cfg), torch.tensor([[100], [63], [0], [0], [0], [0], [0], [0]]))


def test_protected_codes_are_kept_or_refused():
    w = torch.tensor([[127], [70], [0], [0], [0], [0], [0], [0]])
    keep = scale_keepers(w, per_channel=False)
    assert keep.sum() == 1 and bool(keep[0, 0])
    p = project_codes(w, CFG_3331, keep)
    assert int(p[0, 0]) == 127 and budget_excess(p, CFG_3331) == 0
    one_bit = CrossbarConfig(rows=8, cols=8, cell_bits=2, adc_bits=1)  # budget 1 < 127's digit 3
    with pytest.raises(ValueError, match="slice 2's budget of 1"):
        project_codes(w, one_bit, keep)
    with pytest.raises(ValueError, match=r"codes must be a \(K, M\) matrix"):
        project_codes(torch.zeros(3), CFG_3331)


def test_slice_sums_per_polarity_and_tile():
    w = torch.tensor([[5], [-6], [1]])  # 5 = (1, 1), 6 = (2, 1) in base 4
    sums = slice_sums(w, CrossbarConfig(rows=2, cell_bits=2))
    assert sums.shape == (2, 4, 2, 1)
    assert sums[0, :2, 0, 0].tolist() == [1, 1] and sums[1, :2, 0, 0].tolist() == [2, 1]
    assert sums[0, 0, 1, 0] == 1


@pytest.mark.parametrize("per_channel", [False, True])
def test_project_layer_keeps_the_scale_and_lands_on_the_codes(per_channel):
    torch.manual_seed(0)
    layer = CrossbarLinear(40, 6, per_channel=per_channel)
    scale = layer.weight_scale().clone()
    before = layer.weight_codes().to(torch.int64)
    expected = project_codes(before.T, CFG_3331, scale_keepers(layer.weight_matrix().detach().T, per_channel)).T
    n = project_layer(layer, CFG_3331)
    assert n == int((expected != before).sum()) > 0
    assert torch.equal(layer.weight_scale(), scale)
    assert torch.equal(layer.weight_codes().to(torch.int64), expected)
    assert model_budget_excess(layer, CFG_3331) == 0


@settings(max_examples=40, deadline=None)
@given(codes_and_config(), st.integers(0, 20))
def test_snapping_never_adds_a_nonzero_digit_and_keeps_the_budget(case, snap):
    cfg, w, _ = case
    p = project_codes(w, cfg)
    s = snap_codes(p, cfg, snap)
    before, after = weight_slices(p, cfg), weight_slices(s, cfg)
    assert bool((after <= before).all())  # no digit grows: no slice's nonzero count, no column sum
    assert bool(((torch.sign(s) == torch.sign(p)) | (s == 0)).all())
    assert budget_excess(s, cfg) == 0
    assert bool(((p - s).abs() <= snap).all())
    assert torch.equal(snap_codes(p, cfg, 0), p)


def test_snapping_clears_the_most_slices_within_reach():
    cfg = CrossbarConfig(cell_bits=2)
    w = torch.tensor([[17, 18, 19, -65, 127, 2]])  # 17 = 16 + 1, 65 = 64 + 1
    assert snap_codes(w, cfg, 1).tolist() == [[16, 18, 19, -64, 127, 2]]
    assert snap_codes(w, cfg, 3).tolist() == [[16, 16, 16, -64, 124, 0]]  # |code| <= snap goes to zero
    keep = torch.tensor([[False, False, False, False, True, False]])
    assert snap_codes(w, cfg, 3, keep)[0, 4] == 127
    with pytest.raises(ValueError, match="snap must be an integer >= 0, not -1"):
        snap_codes(w, cfg, -1)
