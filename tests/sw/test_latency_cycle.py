# amaranth: UnusedElaboratable=no
"""sw/latency.py's CycleLatency: the compiler's own program at shape level, the cycle model over it,
and `vitforge latency` (sw/projection.py)."""

from __future__ import annotations

import json

import pytest

from vitforge.hw.config import get_preset
from vitforge.hw.cycles import CycleModel
from vitforge.sim.latency_calib import Case
from vitforge.sw.latency import CycleLatency, LatencyModel, choose_schedule, shape_program, tokens_per_block
from vitforge.sw.vit import PRESETS, ViTConfig

#: The shapes of sim/latency_calib's two-block model case: 8x8 image in 4x4 patches, D=16, 2 heads.
CASE = Case("model", dim=16, heads=2, mlp=32, n_tokens=5, depth=2)
VIT = ViTConfig(image_size=8, patch_size=4, in_chans=1, num_classes=10, embed_dim=16, depth=2, num_heads=2,
                mlp_ratio=2.0, selector_blocks=(1,), keep_rates=(0.5,))


#: Instruction fields that carry values (requantization), not shapes or addresses.
VALUE_FIELDS = {"mult_a", "mult_b", "shift"}


def _shape(instr) -> tuple:
    return instr.op, tuple((name, v) for name, v in instr.args if name not in VALUE_FIELDS)


def test_shape_program_is_the_compiled_program():
    cfg, real, _, _ = CASE.build()
    shaped = shape_program(VIT, cfg)
    assert [_shape(i) for i in shaped.instrs] == [_shape(i) for i in real.instrs]
    assert shaped.layers == real.layers
    assert [(ld.blob, ld.count, ld.mem, ld.addr) for ld in shaped.loads] == \
        [(ld.blob, ld.count, ld.mem, ld.addr) for ld in real.loads]


def test_cycle_latency_is_the_cycle_model_at_the_clock():
    lat = CycleLatency("demo")
    assert isinstance(lat, LatencyModel)
    cfg = PRESETS["demo"].with_selectors((1, 3), (0.5, 0.25))
    tokens = tokens_per_block(cfg)
    full = CycleModel(get_preset("demo"), lat.port).program_cycles(lat.program(cfg), [34, 18])
    assert lat.total_cycles(cfg, tokens) == full["total"] == lat.cycles(cfg, tokens)["total"]
    assert lat.latency_ms(cfg, tokens) == pytest.approx(full["total"] / 100e3)
    dense = PRESETS["demo"]
    assert lat.latency_ms(dense, tokens_per_block(dense)) > lat.latency_ms(cfg, tokens)
    less = cfg.with_selectors((1, 3), (0.4, 0.2))
    assert lat.latency_ms(less, tokens_per_block(less)) < lat.latency_ms(cfg, tokens)


def test_schedule_under_the_cycle_model_meets_its_target():
    lat = CycleLatency("demo")
    cfg = PRESETS["demo"]
    target = 0.6 * lat.latency_ms(cfg, tokens_per_block(cfg))
    s = choose_schedule(cfg, target, lat)
    chosen = cfg.with_selectors(s.selector_blocks, s.keep_rates)
    assert s.latency_ms == pytest.approx(lat.latency_ms(chosen, tokens_per_block(chosen))) and s.latency_ms <= target


def test_workflow_states_ms_targets_in_the_cycle_model():
    from vitforge.sw.latency import MacLatency
    from vitforge.sw.workflow import Target

    assert isinstance(Target(latency_ms=5.0).latency_model("demo"), CycleLatency)
    assert isinstance(Target(mac_reduction=0.5).latency_model("demo"), MacLatency)
    with pytest.raises(ValueError, match="unknown hardware preset 'nope'"):
        Target(latency_ms=5.0).latency_model("nope")


def test_default_target_is_half_the_cycle_model_latency():
    """No target given: half the dense model's latency under the preset's cycle model (issue #13), not
    the MAC proxy; a latency reduction is stated in the same model, a MAC reduction in the proxy."""
    from vitforge.sw.latency import MacLatency, target_from_reduction
    from vitforge.sw.workflow import Target

    cfg = PRESETS["demo"]
    lat = Target().latency_model("demo")
    assert isinstance(lat, CycleLatency) and lat.label.startswith("cycle model")
    dense = lat.latency_ms(cfg, tokens_per_block(cfg))
    assert Target().resolve(cfg, lat) == pytest.approx(0.5 * dense)
    assert Target(latency_reduction=0.3).resolve(cfg, lat) == pytest.approx(0.7 * dense)
    mac = Target(mac_reduction=0.3)
    assert isinstance(mac.latency_model("demo"), MacLatency)
    assert mac.resolve(cfg, MacLatency()) == pytest.approx(target_from_reduction(cfg, 0.3, MacLatency()))
    with pytest.raises(ValueError, match="at most one latency target, not latency_ms and latency_reduction"):
        Target(latency_ms=1.0, latency_reduction=0.5)


def _latency_cli(*argv: str, capsys) -> dict:
    from vitforge.cli import main

    assert main(["latency", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_latency_command_projects_the_demo_model(capsys):
    out = _latency_cli("--model", "demo", "--preset", "demo", "--keep", "0.5", capsys=capsys)
    assert out["kind"] == "model" and out["fits"] and out["clock_mhz"] == 100.0
    assert out["selector_blocks"] == [2] and out["tokens_per_block"] == [65, 65, 34, 34]
    assert out["cycles"] == sum(out["per_layer"].values())
    assert out["ms"] == pytest.approx(out["cycles"] / 100e3)
    assert set(out["per_layer"]) == {"embed", "blocks.0", "blocks.1", "selectors.2", "blocks.2", "blocks.3", "head"}
    assert out["gmacs"] > 0


def test_latency_command_projects_models_that_do_not_fit(capsys):
    out = _latency_cli("--model", "deit-base", "--preset", "zcu102", capsys=capsys)
    assert out["fits"] is False and "weight scratchpad" in out["note"] and out["clock_mhz"] == 300.0


def test_latency_command_refuses_shapes_the_compiler_cannot_build(capsys):
    from vitforge.cli import main

    assert main(["latency", "--model", "demo", "--preset", "zcu102"]) == 2
    err = capsys.readouterr().err
    assert "demo cannot be compiled for zcu102 (even with the scratchpads grown): column 16 does not start" in err


def test_train_with_a_ms_target_schedules_under_the_cycle_model(monkeypatch, tmp_path):
    from vitforge.sw import workflow

    from .conftest import TINY

    seen = {}

    class Stop(Exception):
        pass

    def fake_pipeline(cfg, data, tc, target_ms, latency, log, state_dir=None):
        seen.update(target_ms=target_ms, latency=latency)
        raise Stop

    monkeypatch.setattr(workflow, "run_pipeline", fake_pipeline)
    with pytest.raises(Stop):
        workflow.train_to_dir(tmp_path, target=workflow.Target(latency_ms=1.5), hw_preset="demo", cfg=TINY,
                              plots=False, log=lambda _: None)
    assert seen["target_ms"] == 1.5
    assert isinstance(seen["latency"], CycleLatency) and seen["latency"].label == "cycle model, demo @ 100 MHz"


def test_a_selector_that_keeps_every_token_leaves_what_it_sees():
    """Keep rate 1: the token count model adds a package token, the hardware writes none (nothing pruned),
    so the SELECT leaves the tokens it sees and the cycle model accepts it."""
    cfg = PRESETS["demo"].with_selectors((1, 2), (1.0, 0.5))
    lat = CycleLatency("demo")
    counts = tokens_per_block(cfg)
    assert round(counts[1]) == cfg.num_patches + 2  # patches + class + the modeled package token
    assert lat.select_tokens(cfg, counts) == [cfg.num_patches + 1, round(counts[2])]
    dense = PRESETS["demo"]
    assert lat.latency_ms(cfg, counts) > lat.latency_ms(dense.with_selectors((1,), (0.5,)),
                                                        tokens_per_block(dense.with_selectors((1,), (0.5,))))
