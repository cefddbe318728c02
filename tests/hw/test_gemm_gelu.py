# amaranth: UnusedElaboratable=no
# (refused components are created and never elaborated; Amaranth would warn about them at exit)
"""The GELU fused into the GEMM drain path (``HwConfig.fuse_gelu``, ``GEMM.gelu``).

The fused GEMM's scratchpad words against GEMM + GELU (quant.ops.gemm, then int_gelu on its int8
codes: what the two instructions compute), on random operands, several shapes, both DSP packing
settings; the cycle model against the sequencer; the GELU drain under back-pressure; the compiler's
choice between the fused GEMM and the pair; the config's checks.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from vitforge.hw import timing
from vitforge.hw.compiler import compile_block
from vitforge.hw.config import get_preset
from vitforge.hw.gemm import GeluDrain
from vitforge.hw.isa import Instr, Op
from vitforge.quant.nonlinear import int_gelu
from vitforge.quant.ops import gemm
from vitforge.sim.amsim import simulate
from vitforge.sim.benches import reference as block_ref
from vitforge.sim.benches.reference import gemm_case
from vitforge.sim.scoreboard import assert_equal

from .test_gemm_sequencer import ODD, SMALL, TALL, run_case

FUSED = {
    "4x4": dataclasses.replace(SMALL, fuse_gelu=True),
    "4x4-packed": dataclasses.replace(SMALL, fuse_gelu=True, dsp_packing=True),
    "3x4-packed": dataclasses.replace(ODD, fuse_gelu=True, dsp_packing=True),
    "8x4": dataclasses.replace(TALL, fuse_gelu=True),
}

CASES = [
    # name, m, k, n, b_trans, b_act, extra stride words, saturate
    ("square", 4, 4, 4, False, False, 0, False),
    ("ragged", 7, 10, 9, False, False, 1, False),
    ("attnV", 9, 9, 8, False, True, 0, False),
    ("saturate", 5, 13, 5, False, False, 0, True),
    ("many_tiles", 13, 21, 11, False, False, 0, False),
    ("k2_trans", 10, 2, 9, True, False, 0, False),  # drain-bound tiles: the GELU lanes behind each
]


def _with_gelu(instr: Instr, gelu: int) -> Instr:
    return Instr(Op.GEMM, **{**dict(instr.args), "gelu": gelu})


@pytest.mark.parametrize("cfg_name", list(FUSED))
@pytest.mark.parametrize("name,m,k,n,b_trans,b_act,pad,sat", CASES, ids=[c[0] for c in CASES])
def test_fused_gemm_equals_gemm_then_gelu(cfg_name, name, m, k, n, b_trans, b_act, pad, sat):
    cfg = FUSED[cfg_name]
    case = gemm_case(cfg, m=m, k=k, n=n, b_trans=b_trans, b_act=b_act, pad=pad, saturate=sat,
                     seed=sum(map(ord, name)) + m)
    codes = gemm(case.a, case.b, case.bias, case.mult, case.shift)
    expected = int_gelu(codes, cfg.numerics.gelu_in, cfg.numerics.gelu_out)
    assert len(set(expected.flatten().tolist())) > 1, "degenerate case"
    got, cycles = run_case(cfg, dataclasses.replace(case, instr=_with_gelu(case.instr, 1)))
    assert_equal(got, expected, f"fused GEMM+GELU {name} on {cfg_name}")
    assert cycles == timing.gemm_busy_cycles(cfg, m, k, n, b_act=b_act, gelu=True)
    assert cycles == timing.gemm_busy_cycles(cfg, m, k, n, b_act=b_act) + timing.GEMM_GELU_CYCLES


@pytest.mark.parametrize("cfg_name", ["4x4", "3x4-packed"])
def test_fused_build_without_the_flag_is_a_plain_gemm(cfg_name):
    """On a fuse_gelu build a GEMM without ``gelu`` bypasses the lanes: plain codes, plain cycles."""
    cfg = FUSED[cfg_name]
    case = gemm_case(cfg, m=7, k=10, n=9, b_trans=False, b_act=False, pad=1, saturate=False, seed=3)
    got, cycles = run_case(cfg, case)
    assert_equal(got, gemm(case.a, case.b, case.bias, case.mult, case.shift), f"unflagged GEMM on {cfg_name}")
    assert cycles == timing.gemm_busy_cycles(cfg, 7, 10, 9)


def test_gelu_drain_under_back_pressure():
    """Rows and ``last`` come out in order, each lane int_gelu of its input, whatever ``ready`` does;
    with ``enable`` low the rows pass unchanged."""
    cfg = FUSED["4x4"]
    rng = random.Random(11)
    rows = [[rng.randrange(-128, 128) for _ in range(cfg.lanes)] for _ in range(40)]
    lasts = [int(i % 4 == 3) for i in range(len(rows))]
    for enable in (1, 0):
        dut = GeluDrain(config=cfg)
        got = []

        async def source(ctx, dut=dut, enable=enable):
            ctx.set(dut.enable, enable)
            for row, last in zip(rows, lasts, strict=True):
                while rng.random() < 0.3:
                    await ctx.tick()
                ctx.set(dut.input.valid, 1)
                ctx.set(dut.input.payload, {"data": row, "last": last})
                await ctx.tick().until(dut.input.ready)
                ctx.set(dut.input.valid, 0)

        async def sink(ctx, dut=dut, got=got):
            while len(got) < len(rows):
                ready = int(rng.random() < 0.6)
                ctx.set(dut.output.ready, ready)
                _, _, valid, payload = await ctx.tick().sample(dut.output.valid, dut.output.payload)
                if valid and ready:
                    got.append(([int(v) for v in payload.data], int(payload.last)))

        simulate(dut, source, sink, name="gelu_drain")
        x = torch.tensor(rows)
        want = int_gelu(x, cfg.numerics.gelu_in, cfg.numerics.gelu_out) if enable else x
        assert [g[1] for g in got] == lasts
        assert_equal(torch.tensor([g[0] for g in got]), want, f"GELU drain enable={enable}")


@pytest.mark.parametrize("selector", [False, True])
def test_compiler_fuses_every_gemm_that_feeds_a_gelu(selector):
    base = dataclasses.replace(SMALL, act_depth=4096, weight_depth=1024, param_depth=64, imem_depth=128,
                               max_tokens=6, max_embed_dim=16, max_mlp_dim=32, max_heads=2)
    p = block_ref.make_block_params(dim=16, heads=2, mlp=32, selector=selector, seed=1)
    plain = compile_block(block_ref.as_block(p), base, 5)
    fused = compile_block(block_ref.as_block(p), dataclasses.replace(base, fuse_gelu=True), 5)
    gelus = [i for i in plain.instrs if i.op == Op.GELU]
    # fc1, and per selector head MLP1 and two MLP2 layers, plus the weight MLP.
    assert len(gelus) == 1 + (2 * 3 + 1 if selector else 0)
    assert not any(i.op == Op.GELU for i in fused.instrs)
    assert not any(i.op == Op.GEMM and i.gelu for i in plain.instrs)
    flagged = [i for i in fused.instrs if i.op == Op.GEMM and i.gelu]
    assert len(flagged) == len(gelus)
    assert len(fused.instrs) == len(plain.instrs) - len(gelus)
    # Each fused GEMM writes what its GELU wrote, with the GEMM's own requantization.
    plain_pairs = [(plain.instrs[k - 1], g) for k, g in enumerate(plain.instrs) if g.op == Op.GELU]
    for (mm, g), f in zip(plain_pairs, flagged, strict=True):
        assert mm.op == Op.GEMM and (g.src_addr, g.rows, g.cols) == (mm.dst_addr, mm.m, mm.n)
        assert (f.dst_stride, f.m, f.n, f.k) == (g.dst_stride, mm.m, mm.n, mm.k)


def test_config_checks():
    assert get_preset("zcu102").fuse_gelu and not get_preset("demo").fuse_gelu
    with pytest.raises(ValueError, match="fuse_gelu needs the GELU unit"):
        dataclasses.replace(SMALL, fuse_gelu=True, gelu=False)
    with pytest.raises(TypeError, match="fuse_gelu must be a bool, not 1"):
        dataclasses.replace(SMALL, fuse_gelu=1)
    with pytest.raises(ValueError, match="a GEMM with gelu needs a config with fuse_gelu"):
        timing.gemm_busy_cycles(SMALL, 4, 4, 4, gelu=True)
