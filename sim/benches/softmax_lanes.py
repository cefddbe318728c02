"""cocotb bench of the softmax at ``unit_lanes > 1`` (:class:`~vitforge.sim.benches.tops.SoftmaxLanesTop`)
against :func:`vitforge.quant.nonlinear.int_softmax`, exact.

Run through :func:`vitforge.sim.benches.runner.run_bench`; params: ``config`` (``HwConfig.to_json()``,
its ``unit_lanes > 1``), ``rows`` (random rows), ``seed``. Rows of length 1, saturating rows, rows of
``lanes + 1`` and of ``max_tokens`` and random lengths; the last transfer's lanes past the row hold
random codes. The rows are sent back to back, then with random gaps and idle cycles, under random
back-pressure, so that rows overlap in the unit's pipeline and its buffers fill.
"""

from __future__ import annotations

import random

import cocotb
import torch

from vitforge.hw.config import HwConfig
from vitforge.quant.nonlinear import int_softmax
from vitforge.sim.benches.drivers import receive, reset, send
from vitforge.sim.benches.runner import bench_config
from vitforge.sim.benches.tops import SoftmaxLanesTop
from vitforge.sim.scoreboard import assert_equal


async def _run(dut, *, p_idle: float, row_gap: int, p_stall: float, seed_offset: int) -> None:
    params = bench_config()
    cfg = HwConfig.from_json(params["config"])
    rng = random.Random(params["seed"] + seed_offset)
    num, nmax, u = cfg.numerics, cfg.max_tokens, cfg.unit_lanes
    assert u > 1, f"this bench is for unit_lanes > 1, not {u}"
    top = SoftmaxLanesTop(config=cfg)
    top._MustUse__silence = True  # built only for its port shapes
    shape_in, shape_out = top.softmax_i.payload.shape(), top.softmax_o.payload.shape()
    lo, hi = num.softmax_in.qmin, num.softmax_in.qmax
    rows = [[hi], [lo], [hi] + [lo] * (nmax - 1), [lo] * (u + 1), [hi, hi - 1], [lo] * nmax]
    rows += [[rng.randint(lo, hi) for _ in range(rng.randint(1, nmax))] for _ in range(params["rows"])]
    await reset(dut, ["softmax_i"])

    def beats(row: list[int]) -> list[int]:
        padded = row + [rng.randint(lo, hi) for _ in range(-len(row) % u)]
        return [shape_in.const(padded[k:k + u]).as_bits() for k in range(0, len(padded), u)]

    async def producer():
        for row in rows:
            for _ in range(rng.randint(0, row_gap)):
                await cocotb.triggers.FallingEdge(dut.clk)
            dut.softmax_length.value = len(row)  # sampled with the row's first transfer
            await send(dut, "softmax_i", beats(row), rng, p_idle)

    n_beats = [-(-len(row) // u) for row in rows]
    cocotb.start_soon(producer())
    raw = await receive(dut, "softmax_o", sum(n_beats), rng, p_stall=p_stall)
    outs = [shape_out.from_bits(b) for b in raw]
    got, markers, want_markers = [], [], []
    k = 0
    for row, nb in zip(rows, n_beats, strict=True):
        for b in range(nb):
            o = outs[k]
            k += 1
            got += [int(o.data[j]) for j in range(min(u, len(row) - b * u))]
            markers.append((int(o.first), int(o.last)))
            want_markers.append((int(b == 0), int(b == nb - 1)))
    want = [v for row in rows
            for v in int_softmax(torch.tensor(row), num.softmax_in, num.softmax_out, num.exp_out).tolist()]
    assert_equal(got, want, f"softmax at {u} lanes (rows concatenated)")
    assert_equal(markers, want_markers, f"softmax at {u} lanes: (first, last) per transfer")


@cocotb.test()
async def softmax_lanes_back_to_back(dut):
    await _run(dut, p_idle=0.0, row_gap=0, p_stall=0.0, seed_offset=0)


@cocotb.test()
async def softmax_lanes_gaps_and_back_pressure(dut):
    await _run(dut, p_idle=0.2, row_gap=40, p_stall=0.5, seed_offset=1)
