"""cocotb bench of the LayerNorm unit at ``lanes > 1`` (:class:`~vitforge.sim.benches.tops.LayerNormLanesTop`:
rows overlapping in the unit) against quant.nonlinear, exact.

Run through :func:`vitforge.sim.benches.runner.run_bench`; params: ``config`` (``HwConfig.to_json()``),
``lanes``, ``rows`` (random rows), ``seed``. Rows of length 1, of ``lanes + 1``, saturating rows and
random rows up to ``max_embed_dim``, sent one after another with one set of scalars (the unit holds
several at once), then rows whose scalars change, each sent after the row before it has left; random
idle inputs and parameters, random back-pressure on the output.
"""

from __future__ import annotations

import random

import cocotb
import torch
from amaranth.lib import data

from vitforge.hw.config import HwConfig
from vitforge.hw.nonlinear import LN_BETA_BITS
from vitforge.quant.fixed import REQUANT_MAX_SHIFT, REQUANT_MULT_BITS, int_format
from vitforge.quant.nonlinear import int_layernorm
from vitforge.sim.benches.drivers import receive, reset, send
from vitforge.sim.benches.runner import bench_config
from vitforge.sim.benches.tops import LayerNormLanesTop
from vitforge.sim.scoreboard import assert_equal


@cocotb.test()
async def layernorm_lanes_rows(dut):
    params = bench_config()
    cfg, lanes, rng = HwConfig.from_json(params["config"]), params["lanes"], random.Random(params["seed"])
    top = LayerNormLanesTop(config=cfg, lanes=lanes)
    top._MustUse__silence = True  # built only for its port shapes
    num, dmax = cfg.numerics, cfg.max_embed_dim
    fmt, gfmt = int_format(num.act_bits), int_format(num.weight_bits)
    shape_in, shape_par = top.ln_i.payload.shape(), top.ln_params.payload.shape()
    shape_out: data.Layout = top.ln_o.payload.shape()
    beta_lim = 1 << (LN_BETA_BITS - 12)
    mmax = (1 << REQUANT_MULT_BITS) - 1

    def scalars() -> dict:
        return {"mult": rng.randint(1, mmax), "shift": rng.randint(14, min(28, REQUANT_MAX_SHIFT)),
                "eps_q": rng.choice([0, 1, 1000])}

    def case(dim: int, sc: dict, extreme: bool = False) -> dict:
        if extreme:  # alternating extremes, the largest gamma: outputs saturate both ways
            return {"x": [fmt.qmax if k % 2 else fmt.qmin for k in range(dim)], "gamma": [gfmt.qmax] * dim,
                    "beta": [0] * dim, "mult": mmax, "shift": 8, "eps_q": 1}
        return {"x": [rng.randint(fmt.qmin, fmt.qmax) for _ in range(dim)],
                "gamma": [rng.randint(gfmt.qmin, gfmt.qmax) for _ in range(dim)],
                "beta": [rng.randint(-beta_lim, beta_lim) for _ in range(dim)], **sc}

    shared = scalars()
    overlapped = [case(d, shared) for d in [1, lanes + 1, dmax, dmax - 1]]
    overlapped += [case(rng.randint(1, dmax), shared) for _ in range(params["rows"])]
    drained = [case(dmax, {}, extreme=True)] + [case(rng.randint(1, dmax), scalars()) for _ in range(2)]
    cases = overlapped + drained
    beats = [-(-len(c["x"]) // lanes) for c in cases]
    await reset(dut, ["ln_i", "ln_params"])
    raw: list[int] = []

    def chunks(values: list, pad) -> list:
        values = values + [pad] * (-len(values) % lanes)
        return [values[k:k + lanes] for k in range(0, len(values), lanes)]

    async def producer():
        for k, c in enumerate(cases):
            if k >= len(overlapped):  # these rows' scalars differ: wait until the rows before have left
                while len(raw) < sum(beats[:k]):
                    await cocotb.triggers.RisingEdge(dut.clk)
            dut.ln_length.value = len(c["x"])
            dut.ln_eps_q.value, dut.ln_mult.value, dut.ln_shift.value = c["eps_q"], c["mult"], c["shift"]
            words = [shape_in.const(w).as_bits() for w in chunks(c["x"], fmt.qmin)]
            await send(dut, "ln_i", words, rng, 0.1)

    async def params_feed():
        for c in cases:
            pairs = [{"gamma": g, "beta": b} for g, b in zip(c["gamma"], c["beta"], strict=True)]
            words = [shape_par.const(w).as_bits() for w in chunks(pairs, {"gamma": 0, "beta": 0})]
            await send(dut, "ln_params", words, rng, 0.2)

    cocotb.start_soon(producer())
    cocotb.start_soon(params_feed())
    await receive(dut, "ln_o", sum(beats), rng, sink=raw)
    outs = [shape_out.from_bits(b) for b in raw]
    got, markers, want, want_markers = [], [], [], []
    k = 0
    for c, n_beats in zip(cases, beats, strict=True):
        n = len(c["x"])
        for b in range(n_beats):
            got += [int(outs[k].data[j]) for j in range(min(lanes, n - b * lanes))]
            markers.append((int(outs[k].first), int(outs[k].last)))
            want_markers.append((int(b == 0), int(b == n_beats - 1)))
            k += 1
        want += int_layernorm(torch.tensor(c["x"]), torch.tensor(c["gamma"]), torch.tensor(c["beta"]), c["mult"],
                              c["shift"], fmt, eps_q=c["eps_q"]).tolist()
    assert fmt.qmax in want[-3 * dmax:] and fmt.qmin in want[-3 * dmax:], "the extreme row must saturate both ways"
    assert_equal(got, want, f"layernorm at {lanes} lanes (rows concatenated)")
    assert_equal(markers, want_markers, f"layernorm at {lanes} lanes (first, last) markers")
