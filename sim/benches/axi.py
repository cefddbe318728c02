"""cocotb bench of the board-level top (hw/axi.py AxiTop) with cocotbext-axi's bus models.

An ``AxiLiteMaster`` drives the register file and an ``AxiRam`` plays the board's DDR (the
memory port's slave). Run through :func:`vitforge.sim.benches.runner.run_bench`; params: ``config``
(HwConfig.to_json()) and per test:

* ``registers``: ``ID`` and ``CONFIG`` read back; address registers read back what was written;
  a start with a misaligned buffer stops at once with ``STATUS.addr_error``.
* ``block``: ``n_tokens``, ``seed``, ``extra_beats``: one encoder block behind a token selector
  (sim/block_ref) laid out in the RAM as hw/axi.py describes (program, input stream, output),
  run twice in a row; the output read from the RAM must equal sim/block_ref.reference bit for
  bit; the status, counters and per-instruction profile must be consistent. ``extra_beats``
  beats more than the program takes make ``STATUS.in_left`` rise (and are drained).
"""

from __future__ import annotations

import cocotb
import torch
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam

from vitforge.hw.axi import MAGIC, PROFILE_BASE, Reg, Status, config_id, output_bytes, program_image, stream_image
from vitforge.hw.axi import unpack_beats as unpack
from vitforge.hw.compiler import INPUT_BLOB
from vitforge.hw.config import HwConfig
from vitforge.hw.isa import assemble
from vitforge.sim.benches import reference as block_ref
from vitforge.sim.benches.runner import bench_config
from vitforge.sim.scoreboard import assert_equal

RAM_BYTES = 1 << 22
PROG, STREAM, OUT = 0x0000, 0x10000, 0x3F0000
#: Give up on a run after this many cycles.
MAX_CYCLES = 3_000_000


async def setup(dut) -> tuple[AxiLiteMaster, AxiRam]:
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    lite = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
    ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, size=RAM_BYTES)
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    return lite, ram


async def write_reg(lite: AxiLiteMaster, reg: int, value: int) -> None:
    await lite.write_dword(int(reg), value)


async def read_reg(lite: AxiLiteMaster, reg: int) -> int:
    return await lite.read_dword(int(reg))


async def set_buffers(lite: AxiLiteMaster, prog: int, count: int, stream: int, beats: int, out: int) -> None:
    for reg, value in ((Reg.PROG_ADDR_LO, prog), (Reg.PROG_ADDR_HI, 0), (Reg.PROG_COUNT, count),
                       (Reg.IN_ADDR_LO, stream), (Reg.IN_ADDR_HI, 0), (Reg.IN_BEATS, beats),
                       (Reg.OUT_ADDR_LO, out), (Reg.OUT_ADDR_HI, 0)):
        await write_reg(lite, reg, value)


async def run(dut, lite: AxiLiteMaster) -> int:
    """Start and wait for ``irq``; returns STATUS."""
    await write_reg(lite, Reg.CTRL, 1)
    for _ in range(MAX_CYCLES):
        if dut.irq.value:
            break
        await RisingEdge(dut.clk)
    else:
        raise AssertionError(f"no irq after {MAX_CYCLES} cycles; INSTR={await read_reg(lite, Reg.INSTR)}")
    return await read_reg(lite, Reg.STATUS)


@cocotb.test()
async def registers(dut):
    params = bench_config()
    if params.get("test") != "registers":
        return
    cfg = HwConfig.from_json(params["config"])
    lite, _ = await setup(dut)
    assert await read_reg(lite, Reg.ID) == MAGIC
    assert await read_reg(lite, Reg.CONFIG) == config_id(cfg)
    await set_buffers(lite, 0x1000, 3, 0x2000, 5, 0x3000)
    await write_reg(lite, Reg.IN_ADDR_HI, 0x12)
    for reg, want in ((Reg.PROG_ADDR_LO, 0x1000), (Reg.PROG_COUNT, 3), (Reg.IN_ADDR_LO, 0x2000),
                      (Reg.IN_ADDR_HI, 0x12), (Reg.IN_BEATS, 5), (Reg.OUT_ADDR_LO, 0x3000)):
        got = await read_reg(lite, reg)
        assert got == want, f"{reg.name} reads {got:#x}, wrote {want:#x}"
    assert await read_reg(lite, Reg.STATUS) == 0
    await write_reg(lite, Reg.OUT_ADDR_LO, 0x3004)  # not 4 KiB aligned
    status = Status(await run(dut, lite))
    assert status == Status.DONE | Status.ADDR_ERROR, f"STATUS {status!r}"


@cocotb.test()
async def block(dut):
    params = bench_config()
    if params.get("test") != "block":
        return
    cfg = HwConfig.from_json(params["config"])
    n, seed, extra = params["n_tokens"], params["seed"], params["extra_beats"]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(-128, 128, (n, cfg.max_embed_dim), generator=gen)
    p = block_ref.make_block_case(x, dim=cfg.max_embed_dim, heads=cfg.max_heads, mlp=cfg.max_mlp_dim,
                                  selector=True, seed=seed, keep="mixed", num=cfg.numerics)
    expected, _ = block_ref.reference(x, p, cfg.numerics)
    prog = block_ref.block_program(cfg, p, n)
    words = assemble(prog.instrs)
    stream = stream_image(cfg, prog, {INPUT_BLOB: block_ref.pack_matrix(cfg, x)})
    beats = len(stream) * 8 // cfg.bus_bits
    out_words = expected.shape[0] * cfg.row_words(cfg.max_embed_dim)

    lite, ram = await setup(dut)
    ram.write(PROG, program_image(cfg, words))
    ram.write(STREAM, stream + bytes(extra * cfg.bus_bits // 8))
    await set_buffers(lite, PROG, len(words), STREAM, beats + extra, OUT)
    for attempt in range(2):
        ram.write(OUT, bytes(output_bytes(cfg, out_words)))
        status = Status(await run(dut, lite))
        want = Status.DONE | (Status.IN_LEFT if extra else Status(0))
        assert status == want, f"run {attempt}: STATUS {status!r}, expected {want!r}"
        got_words = unpack(cfg, ram.read(OUT, output_bytes(cfg, out_words)), cfg.word_bits)
        got = block_ref.unpack_matrix(cfg, got_words, expected.shape[0], cfg.max_embed_dim)
        assert_equal(got, expected, f"run {attempt}: block output via AXI", shape=tuple(expected.shape))
        assert await read_reg(lite, Reg.TOKENS) == expected.shape[0]
        assert await read_reg(lite, Reg.IN_BEATS_READ) == beats
        assert await read_reg(lite, Reg.OUT_BEATS) == out_words * cfg.beats(cfg.word_bits)
        cycles, total = await read_reg(lite, Reg.CYCLES), await read_reg(lite, Reg.TOTAL_CYCLES)
        assert 0 < cycles < total, (cycles, total)
        assert await read_reg(lite, Reg.INSTR) == len(words) - 1
        starts = [await read_reg(lite, PROFILE_BASE + 4 * i) for i in range(len(words))]
        assert starts == sorted(starts) and len(set(starts)) == len(starts), "profile times must increase"
        assert 0 < starts[0] and starts[-1] < cycles, (starts[0], starts[-1], cycles)
        dut._log.info("run %d: %d -> %d tokens bit-exact; %d controller cycles, %d total", attempt, n,
                      expected.shape[0], cycles, total)
