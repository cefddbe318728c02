"""The masked (padded) integer ops against quant/'s reference on physically compacted tokens."""

from __future__ import annotations

import torch

from vitforge.quant import nonlinear as nl
from vitforge.quant import selector as qsel
from vitforge.quant.config import DEFAULT_NUMERICS as N
from vitforge.quant.fake import set_mode
from vitforge.sw import qops


def test_masked_softmax_equals_compacted_int_softmax():
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(-128, 128, (2, 3, 7, 9), generator=gen)
    alive = (torch.rand(2, 9, generator=gen) > 0.4).float()
    alive[:, 0] = 1
    sm = qops.MaskedSoftmax(N)
    set_mode(sm, "qat")
    s = N.softmax_in.scale
    out, out_s = sm(codes.double() * s, s, alive)
    q = torch.round(out / out_s).long()
    for b in range(2):
        keep = alive[b] > 0.5
        ref = nl.int_softmax(codes[b][..., keep], N.softmax_in, N.softmax_out, N.exp_out)
        assert torch.equal(q[b][..., keep], ref)
        assert bool((q[b][..., ~keep] == 0).all())


def test_package_and_threshold_match_select_tokens():
    gen = torch.Generator().manual_seed(1)
    b, t, d = 3, 10, 8
    x = torch.randint(-128, 128, (b, t, d), generator=gen)
    fused = torch.randint(0, 128, (b, t), generator=gen)
    alive = torch.ones(b, t)
    alive[0, 4] = 0  # pruned at an earlier selector
    s = 0.05
    keep = qops.threshold_keep(fused.double() * qsel.SCORE_FMT.scale, alive, 64)
    pkg, present = qops.package(x.double() * s, s, fused.double() * qsel.SCORE_FMT.scale, alive, keep)
    for i in range(b):
        on = alive[i] > 0.5
        k_ref = qsel.keep_mask(fused[i][on].clone(), 64)
        assert torch.equal(keep[i][on] > 0.5, k_ref)
        ref = qsel.package_token(x[i][on], fused[i][on], k_ref)
        assert bool(present[i, 0]) == (ref is not None)
        if ref is not None:
            assert torch.equal(torch.round(pkg[i, 0] / s).long(), ref)


def test_masked_token_mean_matches_token_mean():
    gen = torch.Generator().manual_seed(2)
    x = torch.randint(-128, 128, (2, 6, 4), generator=gen)
    alive = torch.tensor([[1, 1, 0, 1, 0, 1], [1, 0, 0, 0, 0, 1]], dtype=torch.float64)
    m = qops.masked_token_mean(x.double() * 0.25, 0.25, alive)
    for i in range(2):
        ref = qsel.token_mean(x[i][alive[i] > 0.5], dim=0)
        assert torch.equal(torch.round(m[i] / 0.25).long(), ref)


