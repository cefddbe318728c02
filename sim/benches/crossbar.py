"""cocotb bench of crossbar tiles (hw/crossbar/tile.py) against quant.crossbar.mvm.

The design is a :class:`TileGroup`: several tiles side by side, each behind ports prefixed
``t{i}__``, so that one simulator build checks every config (the build, not the tiles, dominates
a bench's time). Run through :func:`vitforge.sim.benches.runner.run_bench`; params: ``configs`` (one
:meth:`CrossbarConfig.to_dict` per tile, in the group's order), ``vectors`` (random input vectors
per run), ``seed``, and ``noise``: a list of ``[seed, sigma_lsb]`` runs (sigma 0: noise off). For
every tile, each run reseeds the lanes, streams fresh weights and vectors, and compares every
output with ``mvm`` exactly; a lossless config's noise-free outputs are also compared with
``x @ w``. The consumer throttles ``output.ready`` at random (bench_gemm's driver and monitor).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import cocotb
import numpy as np
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import Out
from cocotb.triggers import FallingEdge

from vitforge.hw.crossbar import CrossbarTile, input_layout, output_layout, weight_row_layout
from vitforge.quant.crossbar import CrossbarConfig, NoiseGenerator, mvm
from vitforge.sim.benches.drivers import receive, reset, send
from vitforge.sim.benches.runner import bench_config
from vitforge.sim.scoreboard import assert_equal


class TileGroup(wiring.Component):
    """Crossbar tiles side by side: tile i's ports appear as ``t{i}`` (Verilog ``t{i}__...``).

    Args:
        configs: one :class:`CrossbarConfig` per tile (each at row tile 0, columns from 0).
    """

    def __init__(self, *, configs: Sequence[CrossbarConfig]):
        if not configs:
            raise ValueError("a TileGroup needs at least one config")
        self._tiles = [CrossbarTile(config=cfg) for cfg in configs]
        super().__init__({f"t{i}": Out(tile.signature) for i, tile in enumerate(self._tiles)})

    @property
    def tiles(self) -> list[CrossbarTile]:
        return list(self._tiles)

    def elaborate(self, platform):
        m = Module()
        for i, tile in enumerate(self._tiles):
            m.submodules[f"t{i}"] = tile
            wiring.connect(m, wiring.flipped(getattr(self, f"t{i}")), tile)
        return m


#: Handshake and strobe inputs a tile's bench holds low while idle.
IDLE_INPUTS = ("weights__valid", "input__valid", "output__ready", "reseed")


def tile_operands(cfg: CrossbarConfig, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``w (rows, cols)`` and ``x (n, rows)`` in -127..127: corners (full scale, zero, sparse), then random."""
    w = rng.integers(-127, 128, size=(cfg.rows, cfg.cols))
    w[0] = 127
    w[1] = -127
    w[:, -1] *= rng.random(cfg.rows) < 0.1  # a nearly empty column
    x = rng.integers(-127, 128, size=(max(n, 4), cfg.rows))
    x[0], x[1], x[2] = 127, -127, 0
    x[3] *= rng.random(cfg.rows) < 0.2
    return w, x


async def reseed(dut, prefix: str, seed: int, sigma_code: int) -> None:
    """Set a tile's noise seed and sigma, strobe its ``reseed`` for one cycle."""
    await FallingEdge(dut.clk)
    getattr(dut, f"{prefix}noise_seed").value = seed
    getattr(dut, f"{prefix}noise_sigma").value = sigma_code
    getattr(dut, f"{prefix}reseed").value = 1
    await FallingEdge(dut.clk)
    getattr(dut, f"{prefix}reseed").value = 0


async def check_tile(dut, prefix: str, cfg: CrossbarConfig, params: dict, rng: np.random.Generator,
                     pace: random.Random) -> None:
    """Every noise run of ``params`` on the tile behind ``prefix``, compared with ``mvm``."""
    win, wrow, wout = input_layout(cfg), weight_row_layout(cfg), output_layout(cfg)
    for run, (seed, sigma) in enumerate(params["noise"]):
        noise = NoiseGenerator(seed=seed, sigma_lsb=sigma) if sigma else None
        w, x = tile_operands(cfg, params["vectors"], rng)
        await reseed(dut, prefix, seed, noise.sigma_code if noise else 0)
        await send(dut, f"{prefix}weights", [wrow.const([int(v) for v in row]).as_bits() for row in w])
        words = [win.const([int(v) for v in row]).as_bits() for row in x]
        cocotb.start_soon(send(dut, f"{prefix}input", words))
        out = await receive(dut, f"{prefix}output", len(words), pace, p_stall=0.25)
        got = [[int(wout.from_bits(word)[c]) for c in range(cfg.cols)] for word in out]
        want = mvm(x, w, cfg, noise=noise)
        what = f"tile {prefix[:-2]} ({cfg.rows}x{cfg.cols}, c={cfg.cell_bits}, d={cfg.dac_bits}), run {run}"
        assert_equal(got, want, f"{what} (seed {seed}, sigma {sigma})", shape=want.shape)
        if noise is None and cfg.is_lossless:
            assert_equal(got, x @ w, f"{what}: lossless tile vs x @ w", shape=want.shape)
        if noise is not None:
            assert not np.array_equal(want, mvm(x, w, cfg)), f"{what}: noise changed nothing (a vacuous run)"


@cocotb.test()
async def tiles_match_quant(dut):
    params = bench_config()
    configs = [CrossbarConfig.from_dict(c) for c in params["configs"]]
    rng = np.random.default_rng(params["seed"])
    pace = random.Random(params["seed"])
    await reset(dut, signals=[f"t{i}__{name}" for i in range(len(configs)) for name in IDLE_INPUTS])
    for i, cfg in enumerate(configs):
        await check_tile(dut, f"t{i}__", cfg, params, rng, pace)
