"""HwConfig: presets, derived values, and bad configurations refused with the value quoted."""

from __future__ import annotations

import dataclasses

import pytest

from vitforge.hw.config import BASE, PRESETS, HwConfig, get_preset
from vitforge.quant.config import NumericsConfig

# Resources of the ZCU102's xczu9eg (REFERENCE.md).
ZCU102_DSP, ZCU102_BRAM36 = 2520, 912


def test_presets_validate_and_derive_from_base():
    assert set(PRESETS) == {"demo", "zcu102"}
    for cfg in PRESETS.values():
        assert isinstance(cfg, HwConfig)
        assert cfg.lanes == cfg.pe_cols
        assert cfg.word_bits == cfg.lanes * cfg.act_bits
        assert cfg.act_bits == cfg.numerics.act_bits == 8
        assert cfg.acc_bits == 32
        assert cfg.act_depth >= cfg.block_act_words
        assert cfg.weight_depth >= cfg.layer_weight_words
    # demo is BASE with two-lane row-wise units; BASE keeps the one-lane paths.
    assert get_preset("demo") == dataclasses.replace(BASE, unit_lanes=2)
    assert BASE.unit_lanes == 1


def test_demo_fits_the_tiny_vit():
    cfg = get_preset("demo")
    assert (cfg.max_tokens, cfg.max_embed_dim, cfg.max_heads) == (65, 64, 4)
    assert cfg.max_mlp_dim >= 4 * 64
    # The demo block's weights all fit at once (benches preload them).
    d, h = cfg.max_embed_dim, cfg.max_mlp_dim
    all_weights = cfg.matrix_words(d, 3 * d) + cfg.matrix_words(d, d) + cfg.matrix_words(d, h) + cfg.matrix_words(h, d)
    assert cfg.weight_depth >= all_weights


def test_zcu102_fits_the_device():
    cfg = get_preset("zcu102")
    assert cfg.dsp_estimate <= ZCU102_DSP
    assert cfg.macs + cfg.lanes <= ZCU102_DSP  # even without packing two MACs per DSP
    assert cfg.bram36_estimate <= ZCU102_BRAM36
    assert cfg.max_tokens >= 197 and cfg.max_embed_dim >= 384


def test_presets_operand_cache_holds_their_attention_operands():
    """Both presets' operand caches hold their largest attention GEMM's B in one half and an M tile's
    A in the other (issue #13: one K step per cycle for Q K^T and attn x V after the first tile), a
    power of two (BRAM-friendly)."""
    demo, zcu = get_preset("demo"), get_preset("zcu102")
    assert (demo.attention_b_words, demo.attention_a_words) == (17 * 4 * 4, 4 * 17)  # 65 tokens, head 16, 4x4
    assert (zcu.attention_b_words, zcu.attention_a_words) == (4 * 1 * 64, 32 * 4)  # 197 tokens, head 64, 32x64
    for cfg in (demo, zcu):
        half = cfg.operand_cache_words // 2
        assert half >= cfg.attention_b_words and half >= cfg.attention_a_words
        assert cfg.operand_cache_words & (cfg.operand_cache_words - 1) == 0
    assert HwConfig().operand_cache_words == 0  # the field's default: no cache
    assert BASE.bram36_estimate > dataclasses.replace(BASE, operand_cache_words=0).bram36_estimate


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown hardware preset 'nope'.*demo, zcu102"):
        get_preset("nope")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"pe_rows": 0}, "pe_rows must be a positive integer, not 0"),
        ({"pe_cols": -3}, "pe_cols must be a positive integer, not -3"),
        ({"pe_rows": 2.5}, "pe_rows must be a positive integer, not 2.5"),
        ({"act_depth": 4}, "act_depth 4 is smaller than one tile"),
        ({"weight_depth": 2}, "weight_depth 2 is smaller than one tile"),
        ({"act_depth": 1000}, "act_depth 1000 cannot hold one encoder block"),
        ({"weight_depth": 100}, "weight_depth 100 cannot hold the largest layer"),
        ({"param_depth": 1}, "param_depth 1 cannot hold"),
        ({"act_depth": (1 << 20) + 1}, r"act_depth must be at most 2\*\*20"),
        ({"max_tokens": 5000}, r"max_tokens must be below 2\*\*12 .*, not 5000"),
        ({"max_embed_dim": 72}, "max_embed_dim 72 must be a multiple of max_heads x lanes"),
        ({"max_mlp_dim": 250}, "max_mlp_dim 250 must be a multiple of lanes"),
        ({"clock_mhz": 0}, r"clock_mhz must be in \(0, 1000\], not 0"),
        ({"gelu": 1}, "gelu must be a bool, not 1"),
        ({"numerics": NumericsConfig(act_bits=6)}, "numerics.act_bits must be 8 for the hardware datapath, not 6"),
        ({"numerics": NumericsConfig(weight_bits=4)}, "numerics.weight_bits must be 8"),
        ({"unit_lanes": 3}, "unit_lanes must be a positive divisor of lanes = 4, not 3"),
        ({"unit_lanes": 8}, "unit_lanes must be a positive divisor of lanes = 4, not 8"),
        ({"unit_lanes": 0}, "unit_lanes must be a positive integer, not 0"),
        ({"operand_cache_words": 48}, "operand_cache_words must be 0 .* or a power of two of at least 2 x lanes = 8 "
                                      "words .*, not 48"),
        ({"operand_cache_words": 4}, "operand_cache_words must be 0 .*, not 4"),
        ({"operand_cache_words": -8}, "operand_cache_words must be 0 .*, not -8"),
        ({"operand_cache_words": True}, "operand_cache_words must be 0 .*, not True"),
        ({"operand_cache_words": 64.0}, "operand_cache_words must be 0 .*, not 64.0"),
    ],
)
def test_bad_configs_refused(changes, message):
    with pytest.raises((ValueError, TypeError), match=message):
        dataclasses.replace(BASE, **changes)


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        BASE.pe_rows = 8  # type: ignore[misc]


def test_derived_sizes():
    cfg = dataclasses.replace(BASE, pe_cols=8, max_embed_dim=64, max_heads=4)
    assert cfg.row_words(65) == 9
    assert cfg.matrix_words(3, 17) == 9
    assert cfg.addr_bits(1) == 1 and cfg.addr_bits(1024) == 10 and cfg.addr_bits(1025) == 11
    assert cfg.param_word_bits == 8 * (32 + 16 + 6)
    assert cfg.peak_gops == pytest.approx(2 * 4 * 8 * 100 / 1000)
    assert cfg.row_beats(65) == 65
    assert dataclasses.replace(cfg, unit_lanes=4).row_beats(65) == 17


def test_json_round_trip():
    import json

    for cfg in PRESETS.values():
        assert HwConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg


def test_with_overrides_sets_fields_and_names_bad_ones():
    from vitforge.hw.config import with_overrides

    cfg = with_overrides(get_preset("demo"), ["operand_cache_words=0", "fuse_gelu=true"])
    assert cfg.operand_cache_words == 0 and cfg.fuse_gelu is True
    assert with_overrides(cfg, []) == cfg
    with pytest.raises(ValueError, match="'bogus=1'"):
        with_overrides(cfg, ["bogus=1"])
    with pytest.raises(ValueError, match="'pe_rows'"):
        with_overrides(cfg, ["pe_rows"])
    with pytest.raises(ValueError, match="operand_cache_words"):
        with_overrides(cfg, ["operand_cache_words=3"])
