"""cocotb bench of the token selector control logic (:class:`~vitforge.sim.benches.drivers.SelectorTop`)
against quant.selector, exact.

Run through :func:`vitforge.sim.benches.runner.run_bench`; params: ``config`` (``HwConfig.to_json()``),
``images`` (random images), ``seed``. Sizes (heads, tokens, token width) come from the config.
Cases: all tokens kept, all pruned but the class token, the class token alone, saturating
package tokens, tokens with all head weights 0, random images; token means of random rows.
"""

from __future__ import annotations

import random

import cocotb
import torch
from cocotb.triggers import RisingEdge

from vitforge.hw.config import HwConfig
from vitforge.quant.fixed import INT8
from vitforge.quant.selector import SCORE_FMT, WEIGHT_FMT, select_tokens, token_mean
from vitforge.sim.benches.drivers import receive, reset, send
from vitforge.sim.benches.nonlinear import pack, unpack
from vitforge.sim.benches.runner import bench_config
from vitforge.sim.benches.tops import SelectorTop
from vitforge.sim.scoreboard import assert_equal

STREAM_INPUTS = ["sel_scores", "sel_tokens", "mean_i"]


def make_image(rng: random.Random, n: int, d: int, h: int, kind: str = "random") -> dict:
    """One image's selector inputs; ``kind`` picks a corner case."""
    scores = [[rng.randint(0, SCORE_FMT.qmax) for _ in range(h)] for _ in range(n)]
    weights = [[rng.randint(0, WEIGHT_FMT.qmax) for _ in range(h)] for _ in range(n)]
    threshold = rng.randint(0, SCORE_FMT.qmax)
    x = [[rng.randint(INT8.qmin, INT8.qmax) for _ in range(d)] for _ in range(n)]
    if kind == "keep_all":
        threshold = 0
    elif kind == "prune_all":
        threshold = SCORE_FMT.qmax
        scores = [[min(s, SCORE_FMT.qmax - 1) for s in row] for row in scores]
    elif kind == "zero_weights":
        for k in range(0, n, 2):
            weights[k] = [0] * h
    elif kind == "saturate":
        threshold = SCORE_FMT.qmax
        x = [[INT8.qmin if j % 2 else INT8.qmax for j in range(d)] for _ in range(n)]
    return {"scores": scores, "weights": weights, "threshold": threshold, "x": x}


def reference(img: dict) -> list[list[int]]:
    tokens, _, _ = select_tokens(torch.tensor(img["x"]), torch.tensor(img["scores"]), torch.tensor(img["weights"]),
                                 img["threshold"])
    return tokens.tolist()


@cocotb.test()
async def selector_images(dut):
    params = bench_config()
    cfg = HwConfig.from_json(params["config"])
    rng = random.Random(params["seed"])
    h, nmax, dmax = cfg.max_heads, cfg.max_tokens, cfg.max_embed_dim
    top = SelectorTop(config=cfg)
    s_shape, o_shape = top.sel_scores.payload.shape(), top.sel_o.payload.shape()
    x_shape = top.sel_tokens.payload.shape()
    top._MustUse__silence = True  # built only for its port shapes
    images = [make_image(rng, 8, 4, h, "keep_all"), make_image(rng, nmax, 3, h, "prune_all"),
              make_image(rng, 1, dmax, h), make_image(rng, 6, 5, h, "saturate"),
              make_image(rng, 7, 2, h, "zero_weights")]
    images += [make_image(rng, rng.randint(1, nmax), rng.randint(1, dmax), h) for _ in range(params["images"])]
    wants = [reference(img) for img in images]
    assert len(wants[0]) == 8 and len(wants[1]) == 2, "keep_all keeps 8 tokens; prune_all keeps 1 plus the package"
    counts = [len(w) * len(img["x"][0]) for w, img in zip(wants, images, strict=True)]
    await reset(dut, STREAM_INPUTS)
    raw: list[int] = []

    async def scores():
        for k, img in enumerate(images):
            dut.sel_threshold.value = img["threshold"]
            dut.sel_n_tokens.value, dut.sel_dim.value = len(img["x"]), len(img["x"][0])
            words = [pack(s_shape, {"scores": s, "weights": w, "first": j == 0})
                     for j, (s, w) in enumerate(zip(img["scores"], img["weights"], strict=True))]
            await send(dut, "sel_scores", words, rng, 0.2)
            while len(raw) < sum(counts[: k + 1]):  # the next image's sizes wait until this one has left
                await RisingEdge(dut.clk)

    async def tokens():
        for img in images:
            await send(dut, "sel_tokens", [pack(x_shape, v) for row in img["x"] for v in row], rng, 0.2)

    cocotb.start_soon(scores())
    cocotb.start_soon(tokens())
    await receive(dut, "sel_o", sum(counts), rng, sink=raw)
    outs = [unpack(o_shape, b) for b in raw]
    start = 0
    for k, (img, want) in enumerate(zip(images, wants, strict=True)):
        d = len(img["x"][0])
        mine = outs[start:start + counts[k]]
        start += counts[k]
        assert_equal([o.data for o in mine], want, f"image {k} tokens", shape=(len(want), d))
        pruned = any(o.package for o in mine)
        flags = [(o.first, o.last, o.end) for o in mine]
        want_flags = [(int(j == 0), int(j == d - 1), int(r == len(want) - 1 and j == d - 1))
                      for r in range(len(want)) for j in range(d)]
        assert flags == want_flags, f"image {k}: (first, last, end) markers {flags} != {want_flags}"
        if pruned:
            assert all(o.package for o in mine[-d:]), f"image {k}: the package token must be the last row"


@cocotb.test()
async def token_mean_rows(dut):
    params = bench_config()
    cfg = HwConfig.from_json(params["config"])
    rng = random.Random(params["seed"] + 1)
    top = SelectorTop(config=cfg)
    i_shape, o_shape = top.mean_i.payload.shape(), top.mean_o.payload.shape()
    top._MustUse__silence = True
    nmax = cfg.max_tokens
    rows = [[INT8.qmax], [INT8.qmin] * nmax, [INT8.qmax] * nmax]
    rows += [[rng.randint(INT8.qmin, INT8.qmax) for _ in range(rng.randint(1, nmax))] for _ in range(params["images"])]
    await reset(dut, STREAM_INPUTS)

    async def producer():
        for row in rows:
            dut.mean_length.value = len(row)
            await send(dut, "mean_i", [pack(i_shape, v) for v in row], rng, 0.2)

    cocotb.start_soon(producer())
    raw = await receive(dut, "mean_o", len(rows), rng)
    want = [int(token_mean(torch.tensor(row), dim=0)) for row in rows]
    assert_equal([unpack(o_shape, b) for b in raw], want, "token means")
