# amaranth: UnusedElaboratable=no
"""The row-wise units at ``lanes > 1`` (HwConfig.unit_lanes) vs quant.nonlinear (exact), in the Amaranth simulator.

Each transfer carries ``lanes`` elements; the last transfer of a row has its lanes past the row's end
filled with random codes, which must change nothing. Rows of several lengths: 1, not a multiple of
the lanes, a multiple, the longest.
"""

from __future__ import annotations

import dataclasses
import os
import random

import pytest
import torch

from vitforge.hw import timing
from vitforge.hw.config import get_preset
from vitforge.hw.nonlinear import ElementwiseLanes, GeluUnit, LayerNormUnit, SigmoidUnit, SoftmaxUnit
from vitforge.hw.timing import layernorm_pipeline_times
from vitforge.quant.fixed import REQUANT_MULT_BITS, int_format
from vitforge.quant.nonlinear import int_gelu, int_layernorm, int_sigmoid, int_softmax
from vitforge.sim.amsim import recv, send, simulate
from vitforge.sim.scoreboard import describe_mismatch
from vitforge.tools import env_int

CFG = get_preset("demo")
NUM = CFG.numerics
FMT = int_format(NUM.act_bits)
#: Random rows per test (VITFORGE_DEEP=1 runs many more).
ROWS = env_int("VITFORGE_ROWS", 100 if os.environ.get("VITFORGE_DEEP") else 4)


def _beats(row: list[int], lanes: int, rng: random.Random, lo: int, hi: int) -> list[list[int]]:
    """``row`` as transfers of ``lanes``; the last one's padding lanes hold random codes in ``lo..hi``."""
    padded = row + [rng.randint(lo, hi) for _ in range(-len(row) % lanes)]
    return [padded[k:k + lanes] for k in range(0, len(padded), lanes)]


def _lengths(rng: random.Random, lanes: int, longest: int) -> list[int]:
    fixed = [1, lanes + 1, 2 * lanes, longest, max(1, longest - 1), 3]
    return fixed + [rng.randint(1, longest) for _ in range(ROWS)]


@pytest.mark.parametrize("lanes", [2, 4])
@pytest.mark.parametrize("name", ["gelu", "sigmoid"])
def test_elementwise_lanes_every_code(name: str, lanes: int) -> None:
    make, fin, ref = {
        "gelu": (lambda: GeluUnit(numerics=NUM), NUM.gelu_in, lambda x: int_gelu(x, NUM.gelu_in, NUM.gelu_out)),
        "sigmoid": (lambda: SigmoidUnit(numerics=NUM), NUM.sigmoid_in,
                    lambda x: int_sigmoid(x, NUM.sigmoid_in, NUM.sigmoid_out)),
    }[name]
    unit = ElementwiseLanes(make=make, lanes=lanes)
    codes = fin.codes().tolist()
    random.Random(3).shuffle(codes)
    beats = [codes[k:k + lanes] for k in range(0, len(codes), lanes)]
    got: list[int] = []

    async def producer(ctx):
        await send(ctx, unit.i, beats, rng=random.Random(1), p_idle=0.2)

    async def consumer(ctx):
        for beat in await recv(ctx, unit.o, len(beats), rng=random.Random(2), p_stall=0.3, convert=list):
            got.extend(beat)

    simulate(unit, producer, consumer)
    want = ref(torch.tensor(codes, dtype=torch.int64)).tolist()
    assert (msg := describe_mismatch(got, want, name)) is None, msg
    assert unit.latency == GeluUnit.latency


def _softmax(unit: SoftmaxUnit, rows: list[list[int]], seed: int = 9, *, p_idle: float = 0.2, p_stall: float = 0.3,
             row_gap: int = 0) -> list[tuple[list[int], int, int]]:
    """``rows`` through ``unit``: random idle cycles before the input beats (``p_idle``), and up to
    ``row_gap`` idle cycles between rows; the output stalled at random (``p_stall``)."""
    rng = random.Random(seed)
    fin = NUM.softmax_in
    beats = [_beats(row, unit.lanes, rng, fin.qmin, fin.qmax) for row in rows]
    got: list = []

    async def producer(ctx):
        prng = random.Random(seed + 2)
        for row, row_beats in zip(rows, beats, strict=True):
            for _ in range(prng.randint(0, row_gap)):
                await ctx.tick()
            ctx.set(unit.length, len(row))
            await send(ctx, unit.i, row_beats, rng=prng, p_idle=p_idle)

    async def consumer(ctx):
        got.extend(await recv(ctx, unit.o, sum(map(len, beats)), rng=random.Random(seed + 1), p_stall=p_stall,
                              convert=lambda p: (list(p.data), p.first, p.last)))

    simulate(unit, producer, consumer)
    return got


def _check_softmax(got: list, rows: list[list[int]], lanes: int) -> None:
    values, markers, want, want_markers = [], [], [], []
    k = 0
    for row in rows:
        n_beats = -(-len(row) // lanes)
        for b in range(n_beats):
            data, first, last = got[k]
            k += 1
            values += data[: min(lanes, len(row) - b * lanes)]
            markers.append((bool(first), bool(last)))
            want_markers.append((b == 0, b == n_beats - 1))
        want += int_softmax(torch.tensor(row), NUM.softmax_in, NUM.softmax_out, NUM.exp_out).tolist()
    assert (msg := describe_mismatch(values, want, "probability")) is None, msg
    assert (msg := describe_mismatch(markers, want_markers, "(first, last)")) is None, msg


def _softmax_rows(lanes: int, max_len: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    lo, hi = NUM.softmax_in.qmin, NUM.softmax_in.qmax
    rows = [[hi] + [lo] * (max_len - 1), [lo] * (lanes + 1)]
    return rows + [[rng.randint(lo, hi) for _ in range(n)] for n in _lengths(rng, lanes, max_len)]


@pytest.mark.parametrize("lanes", [2, 4, 8])
def test_softmax_lanes_rows(lanes: int) -> None:
    max_len = 21
    unit = SoftmaxUnit(numerics=NUM, max_len=max_len, lanes=lanes)
    rows = _softmax_rows(lanes, max_len, 40 + lanes)
    _check_softmax(_softmax(unit, rows), rows, lanes)


@pytest.mark.parametrize(("lanes", "max_len", "traffic"), [
    (2, 21, "back_to_back"), (4, 16, "back_to_back"), (8, 197, "back_to_back"),
    (2, 9, "gaps"), (4, 21, "gaps"), (8, 40, "gaps"),
    (4, 21, "stalled"), (8, 21, "stalled"),
])
def test_softmax_lanes_pipelined_rows(lanes: int, max_len: int, traffic: str) -> None:
    """The overlapped rows: input back to back, with gaps between rows, or the output mostly stalled
    (every buffer fills and the stages wait on each other), rows of many lengths, exact."""
    unit = SoftmaxUnit(numerics=NUM, max_len=max_len, lanes=lanes)
    rows = _softmax_rows(lanes, max_len, 70 + lanes + max_len)
    kwargs = {"back_to_back": {"p_idle": 0.0, "p_stall": 0.0}, "gaps": {"p_idle": 0.1, "p_stall": 0.2, "row_gap": 60},
              "stalled": {"p_idle": 0.0, "p_stall": 0.9}}[traffic]
    _check_softmax(_softmax(unit, rows, seed=lanes + max_len, **kwargs), rows, lanes)


@pytest.mark.parametrize(("lanes", "n"), [(2, 1), (2, 21), (4, 5), (4, 16), (8, 3), (8, 197), (8, 138), (8, 68)])
def test_softmax_lanes_schedule_is_exact(lanes: int, n: int) -> None:
    """Rows back to back, ``o.ready`` high: each row's first transfer taken and last output sent on
    the cycles :func:`vitforge.hw.timing.softmax_row_schedule` gives."""
    rows = 9  # more rows than the unit has buffers or dividers
    unit = SoftmaxUnit(numerics=NUM, max_len=max(n, 2 * lanes), lanes=lanes)
    rng = random.Random(n * lanes)
    fin = NUM.softmax_in
    beats = [b for _ in range(rows)
             for b in _beats([rng.randint(fin.qmin, fin.qmax) for _ in range(n)], lanes, rng, fin.qmin, fin.qmax)]
    per_row = -(-n // lanes)
    firsts: list[int] = []
    lasts: list[int] = []

    async def tb(ctx):
        ctx.set(unit.length, n)
        ctx.set(unit.o.ready, 1)
        k, cycle = 0, 0
        while len(lasts) < rows and cycle < 100_000:
            if k < len(beats):
                ctx.set(unit.i.payload, beats[k])
            ctx.set(unit.i.valid, k < len(beats))
            if k < len(beats) and ctx.get(unit.i.ready):
                if k % per_row == 0:
                    firsts.append(cycle)
                k += 1
            if ctx.get(unit.o.valid) and ctx.get(unit.o.payload.last):
                lasts.append(cycle)
            await ctx.tick()
            cycle += 1

    simulate(unit, tb)
    cfg = dataclasses.replace(get_preset("zcu102"), unit_lanes=lanes)  # lanes divisible by 2, 4, 8
    assert list(zip(firsts, lasts, strict=True)) == timing.softmax_row_schedule(cfg, rows, n)
    # The steady state overlaps the rows: far fewer cycles per row than the passes one after another.
    serial = 2 * per_row + SoftmaxUnit.latency(n, lanes)
    assert lasts[-1] - lasts[-2] < serial


def test_softmax_cycles_overlap_rows() -> None:
    cfg = dataclasses.replace(get_preset("zcu102"), unit_lanes=8)
    w = cfg.row_beats(197)
    serial = timing.buffering_cycles(cfg, 6 * 197, 197, SoftmaxUnit.latency(197, 8), w)
    assert timing.softmax_cycles(cfg, 6 * 197, 197) < serial / 3
    with pytest.raises(ValueError, match="unit_lanes > 1, not 1"):
        timing.softmax_row_schedule(dataclasses.replace(cfg, unit_lanes=1), 2, 197)


@pytest.mark.parametrize("lanes", [1, 4])
def test_softmax_lanes_latency_property(lanes: int) -> None:
    unit = SoftmaxUnit(numerics=NUM, max_len=16, lanes=lanes)
    row = [3, -7, 12, 5, 1, 0]
    beats = row if lanes == 1 else _beats(row, lanes, random.Random(0), -4, 4)
    seen: list[int] = []

    async def tb(ctx):
        ctx.set(unit.o.ready, 1)
        ctx.set(unit.length, len(row))
        for x in beats:
            ctx.set(unit.i.payload, x)
            ctx.set(unit.i.valid, 1)
            await ctx.tick().until(unit.i.ready)
        ctx.set(unit.i.valid, 0)
        for cycle in range(1, 200):
            if ctx.get(unit.o.valid):
                seen.append(cycle)
                break
            await ctx.tick()

    simulate(unit, tb)
    assert seen == [SoftmaxUnit.latency(len(row), lanes)]


def _ln_case(rng: random.Random, dim: int) -> dict:
    return {
        "x": [rng.randint(FMT.qmin, FMT.qmax) for _ in range(dim)],
        "gamma": [rng.randint(-128, 127) for _ in range(dim)],
        "beta": [rng.randint(-(1 << 20), 1 << 20) for _ in range(dim)],
        "mult": rng.randint(1 << (REQUANT_MULT_BITS - 1), (1 << REQUANT_MULT_BITS) - 1),
        "shift": rng.randint(16, 26),
        "eps_q": rng.choice([0, 1, 1000]),
    }


def _ln_reference(case: dict) -> list[int]:
    return int_layernorm(torch.tensor(case["x"]), torch.tensor(case["gamma"]), torch.tensor(case["beta"]),
                         case["mult"], case["shift"], FMT, eps_q=case["eps_q"]).tolist()


def _check_ln_rows(got: list, cases: list[dict], n_beats: list[int], lanes: int) -> None:
    """The received ``(data, first, last)`` transfers of ``cases`` against int_layernorm, and the row markers."""
    values, markers, want, want_markers = [], [], [], []
    k = 0
    for case, beats in zip(cases, n_beats, strict=True):
        for b in range(beats):
            data, first, last = got[k]
            k += 1
            values += data[: min(lanes, len(case["x"]) - b * lanes)]
            markers.append((bool(first), bool(last)))
            want_markers.append((b == 0, b == beats - 1))
        want += _ln_reference(case)
    assert (msg := describe_mismatch(values, want, "layernorm")) is None, msg
    assert (msg := describe_mismatch(markers, want_markers, "(first, last)")) is None, msg


@pytest.mark.parametrize("lanes", [2, 4, 8])
def test_layernorm_lanes_rows(lanes: int) -> None:
    max_dim = 24
    unit = LayerNormUnit(numerics=NUM, max_dim=max_dim, lanes=lanes)
    rng = random.Random(60 + lanes)
    cases = [_ln_case(rng, n) for n in _lengths(rng, lanes, max_dim)]
    got: list = []
    n_beats = [-(-len(c["x"]) // lanes) for c in cases]

    async def producer(ctx):
        prng = random.Random(5)
        for k, case in enumerate(cases):
            for port in ("eps_q", "mult", "shift"):
                ctx.set(getattr(unit, port), case[port])
            ctx.set(unit.length, len(case["x"]))
            await send(ctx, unit.i, _beats(case["x"], lanes, rng, FMT.qmin, FMT.qmax), rng=prng, p_idle=0.2)
            while len(got) < sum(n_beats[: k + 1]):  # the scalars change only after the row has left
                await ctx.tick()

    async def params(ctx):
        prng = random.Random(6)
        for case in cases:
            pairs = [{"gamma": g, "beta": b} for g, b in zip(case["gamma"], case["beta"], strict=True)]
            pairs += [{"gamma": rng.randint(-128, 127), "beta": rng.randint(-99, 99)}
                      for _ in range(-len(pairs) % lanes)]
            await send(ctx, unit.params, [pairs[k:k + lanes] for k in range(0, len(pairs), lanes)],
                       rng=prng, p_idle=0.2)

    async def consumer(ctx):
        await recv(ctx, unit.o, sum(n_beats), rng=random.Random(7), p_stall=0.3,
                   convert=lambda p: got.append((list(p.data), p.first, p.last)))

    simulate(unit, producer, params, consumer)
    _check_ln_rows(got, cases, n_beats, lanes)


@pytest.mark.parametrize("lanes", [1, 4])
def test_layernorm_lanes_latency_property(lanes: int) -> None:
    unit = LayerNormUnit(numerics=NUM, max_dim=16, lanes=lanes)
    row = [5, -3, 100, 7, 9, -60]
    beats = row if lanes == 1 else _beats(row, lanes, random.Random(0), -4, 4)
    seen: list[int] = []

    async def tb(ctx):
        ctx.set(unit.o.ready, 1)
        ctx.set(unit.params.valid, 1)
        one = {"gamma": 1, "beta": 0}
        ctx.set(unit.params.payload, one if lanes == 1 else [one] * lanes)
        ctx.set(unit.mult, 1)
        ctx.set(unit.length, len(row))
        for x in beats:
            ctx.set(unit.i.payload, x)
            ctx.set(unit.i.valid, 1)
            await ctx.tick().until(unit.i.ready)
        ctx.set(unit.i.valid, 0)
        for cycle in range(1, 300):
            if ctx.get(unit.o.valid):
                seen.append(cycle)
                break
            await ctx.tick()

    simulate(unit, tb)
    assert seen == [unit.latency(len(row))]


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: SoftmaxUnit(numerics=NUM, max_len=8, lanes=0), r"lanes must be an integer >= 1, not 0"),
        (lambda: LayerNormUnit(numerics=NUM, max_dim=8, lanes=True), r"lanes must be an integer >= 1, not True"),
        (lambda: ElementwiseLanes(make=lambda: GeluUnit(numerics=NUM), lanes=-2),
         r"lanes must be an integer >= 1, not -2"),
    ],
)
def test_lanes_rejects_bad_values(make, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def _ln_pipe(max_dim: int) -> tuple[dict, int]:
    pipe = LayerNormUnit.pipeline_for(NUM, max_dim)
    return pipe, pipe.pop("out_latency")


@pytest.mark.parametrize("lanes", [2, 4, 8])
def test_layernorm_lanes_rows_back_to_back(lanes: int) -> None:
    """Rows overlapping in the unit (one set of scalars, the producer never waits for a row to leave),
    with idle inputs and parameters and a stalling output: exact, markers in place."""
    max_dim = 40
    unit = LayerNormUnit(numerics=NUM, max_dim=max_dim, lanes=lanes)
    rng = random.Random(80 + lanes)
    scalars = _ln_case(rng, 1)
    cases = [{**_ln_case(rng, n), **{k: scalars[k] for k in ("mult", "shift", "eps_q")}}
             for n in _lengths(rng, lanes, max_dim) * 2]
    n_beats = [-(-len(c["x"]) // lanes) for c in cases]
    got: list = []

    async def producer(ctx):
        prng = random.Random(15)
        for port in ("eps_q", "mult", "shift"):
            ctx.set(getattr(unit, port), scalars[port])
        for case in cases:
            ctx.set(unit.length, len(case["x"]))
            await send(ctx, unit.i, _beats(case["x"], lanes, rng, FMT.qmin, FMT.qmax), rng=prng, p_idle=0.1)

    async def params(ctx):
        prng = random.Random(16)
        for case in cases:
            pairs = [{"gamma": g, "beta": b} for g, b in zip(case["gamma"], case["beta"], strict=True)]
            pairs += [{"gamma": 0, "beta": 0} for _ in range(-len(pairs) % lanes)]
            await send(ctx, unit.params, [pairs[k:k + lanes] for k in range(0, len(pairs), lanes)],
                       rng=prng, p_idle=0.2)

    async def consumer(ctx):
        await recv(ctx, unit.o, sum(n_beats), rng=random.Random(17), p_stall=0.3,
                   convert=lambda p: got.append((list(p.data), p.first, p.last)))

    simulate(unit, producer, params, consumer)
    _check_ln_rows(got, cases, n_beats, lanes)


@pytest.mark.parametrize(("lanes", "max_dim", "gaps"), [(2, 24, False), (4, 24, True), (8, 40, False), (8, 40, True),
                                                        (2, 96, False), (4, 96, True)])
def test_layernorm_lanes_cycles_equal_the_model(lanes: int, max_dim: int, gaps: bool) -> None:
    """Every row's first and last output cycle against hw/timing.py ``layernorm_pipeline_times``: rows
    offered back to back (``gaps``: each row's first transfer offered from a random cycle on), parameters
    always valid, the output always ready; short rows (bound by the dividers) and long ones (by the load)."""
    unit = LayerNormUnit(numerics=NUM, max_dim=max_dim, lanes=lanes)
    rng = random.Random(90 + lanes + max_dim)
    rows = [[rng.randint(FMT.qmin, FMT.qmax) for _ in range(n)] for n in _lengths(rng, lanes, max_dim)]
    rows += [[rng.randint(FMT.qmin, FMT.qmax) for _ in range(max_dim)] for _ in range(8)]  # the steady state
    n_beats = [-(-len(r) // lanes) for r in rows]
    arrivals, t = [], 0
    for b in n_beats:
        t += rng.randint(0, 150) if gaps else 0
        arrivals.append(t)
        t += b
    beats = [(r, len(row), chunk) for r, row in enumerate(rows) for chunk in _beats(row, lanes, rng, -4, 4)]
    firsts: list[int] = []
    lasts: list[int] = []

    async def tb(ctx):
        ctx.set(unit.o.ready, 1)
        ctx.set(unit.params.valid, 1)
        ctx.set(unit.params.payload, [{"gamma": 1, "beta": 0}] * lanes)
        ctx.set(unit.mult, 1)
        k, cycle = 0, 0
        while len(lasts) < len(rows) and cycle < 20_000:
            row, n, chunk = beats[k] if k < len(beats) else (-1, 1, [0] * lanes)
            row_start = k == 0 or beats[k - 1][0] != row
            offer = row >= 0 and (cycle >= arrivals[row] if row_start else True)
            ctx.set(unit.length, n)
            ctx.set(unit.i.payload, chunk)
            ctx.set(unit.i.valid, offer)
            _, _, ready, valid, payload = await ctx.tick().sample(unit.i.ready, unit.o.valid, unit.o.payload)
            k += bool(offer and ready)
            if valid and payload.first:
                firsts.append(cycle)
            if valid and payload.last:
                lasts.append(cycle)
            cycle += 1

    simulate(unit, tb)
    pipe, out_latency = _ln_pipe(max_dim)
    want = layernorm_pipeline_times(n_beats, arrivals=arrivals, **pipe)
    assert firsts == [f + out_latency for f, _ in want]
    assert lasts == [e + out_latency for _, e in want]
