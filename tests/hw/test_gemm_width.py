"""The PE accumulators' width (HwConfig.pe_acc_bits): the worst-case sum fits, and the compiler's
GEMMs stay within the reduction length it is derived from (HwConfig.max_gemm_k)."""

from __future__ import annotations

import dataclasses

import pytest

from vitforge.hw.config import MAX_INT8_PRODUCT, PRESETS
from vitforge.hw.isa import TOKENS, Op
from vitforge.quant.fixed import INT8
from vitforge.sw.latency import shape_program
from vitforge.sw.vit import get_config


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_worst_case_sum_fits_and_the_width_is_the_least(preset):
    cfg = PRESETS[preset]
    assert MAX_INT8_PRODUCT == INT8.qmin * INT8.qmin == max(abs(INT8.qmin), INT8.qmax) ** 2
    hi, lo = cfg.max_gemm_k * MAX_INT8_PRODUCT, cfg.max_gemm_k * INT8.qmin * INT8.qmax
    bits = cfg.pe_acc_bits
    assert -(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1  # signed pe_acc_bits hold every sum
    assert hi > (1 << (bits - 2)) - 1  # one bit fewer would not
    assert bits < cfg.acc_bits  # narrower than the 32-bit bias add and requantizer


@pytest.mark.parametrize(("model", "preset", "selectors"), [
    ("demo", "demo", (1, 2)), ("deit-tiny", "zcu102", (3, 6, 9)), ("deit-small", "zcu102", (3, 6, 9))])
def test_compiled_gemms_reduce_within_max_gemm_k(model, preset, selectors):
    """Every GEMM of the compiled program (patch embedding, blocks, selectors, head) has K <= max_gemm_k,
    and the longest one is fc2's (over the MLP width)."""
    vit = get_config(model).with_selectors(selectors, tuple(0.5 for _ in selectors))
    hw = PRESETS[preset]
    hw = dataclasses.replace(hw, act_depth=max(hw.act_depth, 32768))  # DeiT-S needs more activation words
    # K = TOKENS: the token count left by the last selector (at most max_tokens)
    ks = [hw.max_tokens if ins.k == TOKENS else ins.k for ins in shape_program(vit, hw).instrs if ins.op == Op.GEMM]
    assert ks and max(ks) <= hw.max_gemm_k
    assert max(ks) == vit.mlp_dim
