"""cocotb bench of the nonlinear units (:class:`~vitforge.sim.benches.drivers.NonlinearTop`)
against quant.nonlinear, exact.

Run through :func:`vitforge.sim.benches.runner.run_bench`; params: ``config`` (``HwConfig.to_json()``),
``rows`` (random rows per row-wise unit), ``seed``. Every code of the GELU and sigmoid input
formats; softmax rows of length 1, saturating rows and random rows up to ``max_tokens``;
LayerNorm rows of length 1, saturating rows and random rows up to ``max_embed_dim``.
"""

from __future__ import annotations

import random

import cocotb
import torch
from amaranth import Shape
from amaranth.lib import data

from vitforge.hw.config import HwConfig
from vitforge.hw.nonlinear import LN_BETA_BITS
from vitforge.quant.fixed import REQUANT_MAX_SHIFT, REQUANT_MULT_BITS, FixedFormat, int_format
from vitforge.quant.nonlinear import int_gelu, int_layernorm, int_sigmoid, int_softmax
from vitforge.sim.benches.drivers import receive, reset, send
from vitforge.sim.benches.runner import bench_config
from vitforge.sim.benches.tops import NonlinearTop
from vitforge.sim.scoreboard import assert_equal

STREAM_INPUTS = ["gelu_i", "sigmoid_i", "softmax_i", "ln_i", "ln_params"]


def pack(shape, value) -> int:
    """A payload value as the port's bit pattern (plain shapes and layouts)."""
    if isinstance(shape, data.Layout):
        return shape.const(value).as_bits()
    return value & ((1 << Shape.cast(shape).width) - 1)


def unpack(shape, bits: int):
    """The port's bit pattern as a value (an int, or a layout's const view)."""
    if isinstance(shape, data.Layout):
        return shape.from_bits(bits)
    shape = Shape.cast(shape)
    return bits - (1 << shape.width) if shape.signed and bits >> (shape.width - 1) else bits


def _setup() -> tuple[HwConfig, dict, random.Random, NonlinearTop]:
    params = bench_config()
    cfg = HwConfig.from_json(params["config"])
    return cfg, params, random.Random(params["seed"]), NonlinearTop(config=cfg)


async def _elementwise(dut, name: str, fmt_in: FixedFormat, reference) -> None:
    _, _, rng, top = _setup()
    shape_in = getattr(top, f"{name}_i").payload.shape()
    shape_out = getattr(top, f"{name}_o").payload.shape()
    top._MustUse__silence = True  # built only for its port shapes
    codes = fmt_in.codes().tolist()
    await reset(dut, STREAM_INPUTS)
    cocotb.start_soon(send(dut, f"{name}_i", [pack(shape_in, c) for c in codes], rng, 0.2))
    raw = await receive(dut, f"{name}_o", len(codes), rng)
    assert_equal([unpack(shape_out, b) for b in raw], reference(torch.tensor(codes)), f"{name} of every input code")


@cocotb.test()
async def gelu_every_code(dut):
    num = HwConfig.from_json(bench_config()["config"]).numerics
    await _elementwise(dut, "gelu", num.gelu_in, lambda x: int_gelu(x, num.gelu_in, num.gelu_out))


@cocotb.test()
async def sigmoid_every_code(dut):
    num = HwConfig.from_json(bench_config()["config"]).numerics
    await _elementwise(dut, "sigmoid", num.sigmoid_in, lambda x: int_sigmoid(x, num.sigmoid_in, num.sigmoid_out))


def _check_rows(name: str, outs: list, rows: list, want_rows: list) -> None:
    flat = [o.data for o in outs]
    assert_equal(flat, [v for row in want_rows for v in row], f"{name} outputs (rows concatenated)")
    markers = [(o.first, o.last) for o in outs]
    want = [(int(k == 0), int(k == len(row) - 1)) for row in rows for k in range(len(row))]
    assert_equal([f for f, _ in markers], [f for f, _ in want], f"{name} first markers")
    assert_equal([la for _, la in markers], [la for _, la in want], f"{name} last markers")


@cocotb.test()
async def softmax_rows(dut):
    cfg, params, rng, top = _setup()
    num, nmax = cfg.numerics, cfg.max_tokens
    shape_out = top.softmax_o.payload.shape()
    top._MustUse__silence = True
    lo, hi = num.softmax_in.qmin, num.softmax_in.qmax
    rows = [[hi], [lo], [hi] + [lo] * (nmax - 1), [lo] * nmax, [hi, hi - 1]]  # length 1, saturation, ties
    rows += [[rng.randint(lo, hi) for _ in range(rng.randint(1, nmax))] for _ in range(params["rows"])]
    await reset(dut, STREAM_INPUTS)

    async def producer():
        for row in rows:
            dut.softmax_length.value = len(row)  # sampled with the row's first element
            await send(dut, "softmax_i", [pack(top.softmax_i.payload.shape(), x) for x in row], rng, 0.2)

    cocotb.start_soon(producer())
    raw = await receive(dut, "softmax_o", sum(map(len, rows)), rng)
    want = [int_softmax(torch.tensor(row), num.softmax_in, num.softmax_out, num.exp_out).tolist() for row in rows]
    assert num.softmax_out.qmax in want[0], "a row of length 1 must saturate to the largest probability"
    _check_rows("softmax", [unpack(shape_out, b) for b in raw], rows, want)


@cocotb.test()
async def layernorm_rows(dut):
    cfg, params, rng, top = _setup()
    num, dmax = cfg.numerics, cfg.max_embed_dim
    fmt, gfmt = int_format(num.act_bits), int_format(num.weight_bits)
    shape_out, shape_par = top.ln_o.payload.shape(), top.ln_params.payload.shape()
    shape_in = top.ln_i.payload.shape()
    top._MustUse__silence = True
    beta_lim = 1 << (LN_BETA_BITS - 12)
    mmax = (1 << REQUANT_MULT_BITS) - 1

    def case(dim: int, extreme: bool = False) -> dict:
        if extreme:  # alternating extremes, the largest gamma and multiplier: outputs saturate both ways
            return {"x": [fmt.qmax if k % 2 else fmt.qmin for k in range(dim)], "gamma": [gfmt.qmax] * dim,
                    "beta": [0] * dim, "mult": mmax, "shift": 8, "eps_q": 1}
        return {"x": [rng.randint(fmt.qmin, fmt.qmax) for _ in range(dim)],
                "gamma": [rng.randint(gfmt.qmin, gfmt.qmax) for _ in range(dim)],
                "beta": [rng.randint(-beta_lim, beta_lim) for _ in range(dim)],
                "mult": rng.randint(1, mmax), "shift": rng.randint(14, min(28, REQUANT_MAX_SHIFT)),
                "eps_q": rng.choice([0, 1, 1000])}

    cases = [case(1), case(dmax, extreme=True), case(dmax)]
    cases += [case(rng.randint(2, dmax)) for _ in range(params["rows"])]
    await reset(dut, STREAM_INPUTS)
    raw: list[int] = []

    async def producer():
        for k, c in enumerate(cases):
            dut.ln_length.value = len(c["x"])
            dut.ln_eps_q.value, dut.ln_mult.value, dut.ln_shift.value = c["eps_q"], c["mult"], c["shift"]
            await send(dut, "ln_i", [pack(shape_in, x) for x in c["x"]], rng, 0.2)
            while len(raw) < sum(len(cc["x"]) for cc in cases[: k + 1]):  # scalars hold until the row left
                await cocotb.triggers.RisingEdge(dut.clk)

    async def params_feed():
        for c in cases:
            words = [pack(shape_par, {"gamma": g, "beta": b}) for g, b in zip(c["gamma"], c["beta"], strict=True)]
            await send(dut, "ln_params", words, rng, 0.2)

    cocotb.start_soon(producer())
    cocotb.start_soon(params_feed())
    await receive(dut, "ln_o", sum(len(c["x"]) for c in cases), rng, sink=raw)
    want = [int_layernorm(torch.tensor(c["x"]), torch.tensor(c["gamma"]), torch.tensor(c["beta"]), c["mult"],
                          c["shift"], fmt, eps_q=c["eps_q"]).tolist() for c in cases]
    assert fmt.qmax in want[1] and fmt.qmin in want[1], "the extreme row must saturate both ways"
    _check_rows("layernorm", [unpack(shape_out, b) for b in raw], [c["x"] for c in cases], want)
