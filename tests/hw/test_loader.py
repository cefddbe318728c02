# amaranth: UnusedElaboratable=no
"""The controller's loader (LOAD nowait, SYNC pending, a full queue, a blocking LOAD and END behind
overlapped ones) on EncoderTop in the Amaranth simulator: two GEMMs on prefetched weights bit for
bit against quant/, and hw/cycles.py's two timelines against the RTL's dispatch profile, cycle for
cycle. Whole programs with overlapped LOADs: tests/hw/test_controller.py, tests/sim/test_latency_calib.py."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vitforge.hw.compiler import INPUT_BLOB, Load, Program, pack_matrix, pack_params, prefetch, unpack_matrix
from vitforge.hw.config import BASE
from vitforge.hw.cycles import CycleModel
from vitforge.hw.isa import Instr, Mem, Op
from vitforge.quant.ops import gemm
from vitforge.sim.amsim import run_encoder_top
from vitforge.sim.latency_calib import compare, profile_program

#: A 4x4 array; a queue of one LOAD behind the one loading, so a third LOAD nowait waits for room.
CFG = dataclasses.replace(BASE, act_depth=512, weight_depth=256, param_depth=16, imem_depth=64, max_tokens=8,
                          max_embed_dim=16, max_mlp_dim=16, max_heads=2, load_queue=1)
M, K, N = 4, 8, 4


def _case(seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(-128, 128, (M, K), generator=gen)
    ws = [torch.randint(-128, 128, (K, N), generator=gen) for _ in range(2)]
    bias = [torch.randint(-2000, 2000, (N,), generator=gen) for _ in range(2)]
    mult = [torch.randint(1, 1 << 15, (N,), generator=gen) for _ in range(2)]
    shift = [torch.full((N,), 14) for _ in range(2)]
    return x, ws, bias, mult, shift


def _program(x, ws, bias, mult, shift, filler: int) -> tuple[Program, dict]:
    """x in, two GEMMs on overlapped weight/param LOADs, an overlapped LOAD that a blocking ACT LOAD
    waits for, and one that END waits for; both outputs stored."""
    cfg = CFG
    kw, nw = cfg.row_words(K), cfg.row_words(N)
    blobs = {"w0": pack_matrix(cfg, ws[0]), "w1": pack_matrix(cfg, ws[1]),
             "p0": pack_params(cfg, bias[0], mult[0], shift[0]), "p1": pack_params(cfg, bias[1], mult[1], shift[1]),
             "pad": [7] * 4, "fill": list(range(filler))}
    w0, w1, fill = 0, K * nw, 2 * K * nw
    out0, out1, pad = M * kw, M * kw + M * nw, M * kw + 2 * M * nw
    loads = [Load(INPUT_BLOB, 0, M * kw, Mem.ACT, 0), Load("w0", 0, K * nw, Mem.WEIGHT, w0),
             Load("p0", 0, 1, Mem.PARAM, 0), Load("w1", 0, K * nw, Mem.WEIGHT, w1),
             Load("p1", 0, 1, Mem.PARAM, 1), Load("fill", 0, filler, Mem.WEIGHT, fill),
             Load("pad", 0, 4, Mem.ACT, pad), Load("fill", 0, filler, Mem.WEIGHT, fill)]

    def gemm_ins(b, dst, prm):
        return Instr(Op.GEMM, a_addr=0, a_stride=kw, b_addr=b, b_stride=nw, dst_addr=dst, dst_stride=nw,
                     param_addr=prm, m=M, k=K, n=N)
    ld = [Instr(Op.LOAD, mem=lo.mem, addr=lo.addr, count=lo.count, nowait=int(lo.mem != Mem.ACT)) for lo in loads]
    instrs = [ld[0], ld[1], ld[2], ld[3],        # the third LOAD nowait finds the queue full
              ld[4], Instr(Op.SYNC, pending=1),  # w0, p0 and w1 in; p1 may go on
              gemm_ins(w0, out0, 0), Instr(Op.SYNC), gemm_ins(w1, out1, 1),
              ld[5], ld[6],                      # a blocking LOAD waits for the loader to be idle
              Instr(Op.STORE, mem=Mem.ACT, addr=out0, count=2 * M * nw),
              ld[7], Instr(Op.END)]              # END waits for the loader
    prog = Program(instrs, blobs, loads, (M, K), 2 * M, N, ["program"] * len(instrs))
    return prog, {INPUT_BLOB: pack_matrix(cfg, x)}


@pytest.mark.parametrize("filler", [3, 40])
def test_overlapped_loads_are_bit_exact_and_the_model_follows_both_timelines(filler):
    x, ws, bias, mult, shift = _case(filler)
    prog, inputs = _program(x, ws, bias, mult, shift, filler)
    out = run_encoder_top(CFG, prog, inputs, max_cycles=20_000)
    assert out["done"] and not out["error"] and out["dma_left"] == 0
    got = unpack_matrix(CFG, out["stored"], 2 * M, N)
    for i in range(2):
        want = gemm(x, ws[i], bias[i], mult[i], shift[i])
        assert torch.equal(got[i * M:(i + 1) * M], want), f"GEMM {i} on prefetched weights"
    measured = profile_program(CFG, prog, inputs)
    result = compare(CycleModel(CFG), prog, measured)
    assert not result["mismatches"], result["mismatches"]
    assert result["total"][0] == result["total"][1]
    # The waits happened: the full queue, the SYNC, and with the long filler the blocking LOAD and END.
    per = measured["per_instr"]
    assert per[3] > 3 and per[5] > 3
    if filler > M * CFG.row_words(N):  # longer than the STORE between them
        assert per[10] > CycleModel(CFG).instr_cycles(prog.instrs[10], 0) and per[-1] > 1


def test_prefetch_moves_loads_up_and_waits_before_their_readers():
    """The compiler's order (each LOAD right before its GEMM) through :func:`prefetch`."""
    x, ws, bias, mult, shift = _case(1)
    prog, _ = _program(x, ws, bias, mult, shift, 3)
    ld = [Instr(Op.LOAD, mem=lo.mem, addr=lo.addr, count=lo.count) for lo in prog.loads]
    g0, g1 = (i for i in prog.instrs if i.op == Op.GEMM)
    store, end = prog.instrs[-3], prog.instrs[-1]
    emitted = [ld[0], ld[1], ld[2], g0, ld[3], ld[4], g1, ld[5], store, end]
    loads = prog.loads[:6]
    out = prefetch(CFG, dataclasses.replace(prog, instrs=emitted, loads=loads, layers=[]))
    got = [(i.op.name, i.nowait if i.op == Op.LOAD else i.pending if i.op == Op.SYNC else None) for i in out.instrs]
    # w0/p0 follow a LOAD: they stay blocking. w1, p1 and the filler move above GEMM 0 (it reads
    # none of their words); GEMM 1 waits for p1 (w1 is done: the loader holds two at most), not the filler.
    assert got == [("LOAD", 0), ("LOAD", 0), ("LOAD", 0), ("LOAD", 1), ("LOAD", 1), ("LOAD", 1), ("GEMM", None),
                   ("SYNC", 1), ("GEMM", None), ("STORE", None), ("END", None)]
    assert [(lo.mem, lo.addr, lo.count) for lo in out.loads] == \
        [(i.mem, i.addr, i.count) for i in out.instrs if i.op == Op.LOAD]


def test_queue_depth_and_pending_are_checked():
    from vitforge.hw.config import HwConfig

    with pytest.raises(ValueError, match=r"load_queue must be in 1\.\.15 \(SYNC's pending field\), not 16"):
        HwConfig(load_queue=16)
    with pytest.raises(ValueError, match="load_queue must be a positive integer, not 0"):
        HwConfig(load_queue=0)
    with pytest.raises(ValueError, match=r"SYNC.pending must be an integer in 0..15, not 16"):
        Instr(Op.SYNC, pending=16)
