"""Token-selector control logic: fuse, decide, compact, package token."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from vitforge.quant.selector import fuse_scores, keep_mask, select_tokens, token_mean


def random_case(n=12, h=3, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-128, 128, (n, d), generator=g)
    s = torch.randint(0, 128, (n, h), generator=g)
    a = torch.randint(0, 256, (n, h), generator=g)
    return x, s, a


def test_fused_score_is_the_weighted_mean_floored():
    s = torch.tensor([[100, 20], [0, 0], [127, 127]])
    a = torch.tensor([[3, 1], [0, 0], [255, 1]])
    assert fuse_scores(s, a).tolist() == [(300 + 20) // 4, 0, 127]


@given(st.integers(0, 2**31 - 1), st.integers(0, 127))
def test_selection_keeps_order_class_token_and_packages_the_rest(seed, threshold):
    x, s, a = random_case(seed=seed)
    tokens, keep, fused = select_tokens(x, s, a, threshold)
    assert bool(keep[0])
    assert torch.equal(keep[1:], fused[1:] >= threshold)
    kept = x[keep]
    assert torch.equal(tokens[: len(kept)], kept)
    pruned = ~keep
    if pruned.any():
        assert len(tokens) == len(kept) + 1
        w = (fused[pruned] + 1).to(torch.float64)
        want = (w[:, None] * x[pruned]).sum(0) / w.sum()
        assert float((tokens[-1] - want).abs().max()) <= 0.5 + 1e-6  # one rounding
    else:
        assert len(tokens) == len(kept)


def test_all_kept_has_no_package_token():
    x, s, a = random_case()
    tokens, keep, _ = select_tokens(x, s, a, 0)
    assert bool(keep.all()) and torch.equal(tokens, x)


def test_all_pruned_but_the_class_token():
    x, s, a = random_case()
    s[:] = 0
    tokens, keep, _ = select_tokens(x, s, a, 127)
    assert keep.tolist() == [True] + [False] * (len(x) - 1)
    assert tokens.shape == (2, x.shape[1])
    assert torch.equal(tokens[0], x[0])


def test_token_mean_rounds_half_up():
    x = torch.tensor([[1, 2], [2, 2], [-3, -2]])
    assert token_mean(x, dim=0).tolist() == [0, 1]  # 0/3 -> 0, 2/3 -> 1


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: keep_mask(torch.zeros(3, dtype=torch.int64), 128), "threshold must be a Q0.7 code in 0..127, not 128"),
        (lambda: fuse_scores(torch.zeros(3, 2, dtype=torch.int64), torch.zeros(3, 1, dtype=torch.int64)), "heads"),
        (lambda: fuse_scores(torch.full((2, 2), -1), torch.zeros(2, 2, dtype=torch.int64)), "probabilities"),
        (lambda: fuse_scores(torch.zeros(2, 2, dtype=torch.int64), torch.full((2, 2), 256)), "outside the u8.8"),
    ],
)
def test_bad_input_is_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()
