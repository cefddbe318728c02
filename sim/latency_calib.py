"""Per-instruction cycles of a program on hw/top.py EncoderTop in the Amaranth simulator, and their
comparison with the analytical model of sim/latency.py.

* :func:`profile_program` — run a :class:`~vitforge.hw.program.Program` (ideal ``dma_in`` stream:
  one word per cycle; ``dma_out`` always ready) and latch the ``cycles`` port at every ``issue``
  pulse: per-instruction cycles (dispatch to next dispatch), the token count each ``SELECT`` left,
  the total.
* :func:`compare` — the model's cycles for the same run, per instruction and per layer, with errors.
"""

from __future__ import annotations

import itertools

from vitforge.hw.isa import Op

from .amsim import simulate


def profile_program(cfg, program, inputs: dict[str, list[int]], max_cycles: int = 20_000_000) -> dict:
    """Run ``program`` on EncoderTop; returns ``{"per_instr", "issue", "total", "select_tokens",
    "per_layer", "done", "error"}``.

    ``per_instr[i]``: cycles from instruction ``i``'s dispatch to the next one's (``END``: 1);
    ``issue[i]``: the ``cycles`` value at its dispatch; ``select_tokens``: the token count after each
    ``SELECT``; ``per_layer``: ``per_instr`` summed by ``program.layers`` (start-up cycles in the first).
    """
    from vitforge.hw.isa import assemble
    from vitforge.hw.top import EncoderTop, HostMem

    from .latency import START_CYCLES

    dut = EncoderTop(config=cfg)
    feed = program.dma_words(inputs)
    words = assemble(program.instrs)
    out: dict = {"issue": {}, "tokens_at": {}}
    started = []

    async def run(ctx):
        for i, word in enumerate(words):
            ctx.set(dut.host_mem, int(HostMem.IMEM))
            ctx.set(dut.host_addr, i)
            ctx.set(dut.host_wdata, word)
            ctx.set(dut.host_we, 1)
            await ctx.tick()
        ctx.set(dut.host_we, 0)
        ctx.set(dut.dma_out.ready, 1)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        started.append(True)
        n = 0
        async for _, _, issue, instr, cycles, tokens, done in ctx.tick().sample(
                dut.issue, dut.instr, dut.cycles, dut.tokens, dut.done):
            if issue:
                out["issue"][int(instr)] = int(cycles)
                out["tokens_at"][int(instr)] = int(tokens)
            if done:
                out.update(total=int(cycles), done=True, error=bool(ctx.get(dut.error)))
                return
            n += 1
            if n > max_cycles:
                out.update(total=int(cycles), done=False, error=False)
                return

    async def dma(ctx):
        while not started:
            await ctx.tick()
        for word in feed:
            ctx.set(dut.dma_in.valid, 1)
            ctx.set(dut.dma_in.payload, word)
            await ctx.tick().until(dut.dma_in.ready)
        ctx.set(dut.dma_in.valid, 0)

    simulate(dut, run, dma, name="latency_profile")
    if not out.get("done"):
        raise RuntimeError(f"the program did not finish within {max_cycles} cycles")
    if out["error"]:
        raise RuntimeError("the controller stopped with error (an opcode whose unit is not built)")
    n = len(program.instrs)
    missing = [i for i in range(n) if i not in out["issue"]]
    if missing:
        raise RuntimeError(f"instructions {missing[:5]} were never dispatched")
    issue = [out["issue"][i] for i in range(n)]
    per_instr = [b - a for a, b in itertools.pairwise(issue)] + [out["total"] - issue[-1]]
    select_tokens = [out["tokens_at"][i + 1] for i, ins in enumerate(program.instrs) if ins.op == Op.SELECT]
    if issue[0] != START_CYCLES:
        raise RuntimeError(f"the first dispatch came at cycle {issue[0]}, not {START_CYCLES}")
    return {"per_instr": per_instr, "issue": issue, "total": out["total"], "select_tokens": select_tokens,
            "per_layer": _per_layer(program, per_instr), "done": True, "error": False}


def _per_layer(program, per_instr: list[int]) -> dict[str, int]:
    from .latency import START_CYCLES

    layers = program.layers or ["program"] * len(per_instr)
    out: dict[str, int] = {}
    for i, (name, c) in enumerate(zip(layers, per_instr, strict=True)):
        out[name] = out.get(name, 0) + c + (START_CYCLES if i == 0 else 0)
    return out


def compare(model, program, measured: dict) -> dict:
    """The model (a :class:`~vitforge.sim.latency.CycleModel`) against a :func:`profile_program` run.

    Returns ``{"total": (model, rtl), "per_layer": {layer: {"model", "rtl", "error"}},
    "mismatches": [(index, instr text, model, rtl)]}`` (``error``: relative, model over RTL minus 1).
    """
    pred = model.program_cycles(program, measured["select_tokens"])
    per_layer = {name: {"model": pred["per_layer"][name], "rtl": rtl, "error": pred["per_layer"][name] / rtl - 1}
                 for name, rtl in measured["per_layer"].items()}
    mismatches = [(i, str(ins), p, r) for i, (ins, p, r) in
                  enumerate(zip(program.instrs, pred["per_instr"], measured["per_instr"], strict=True)) if p != r]
    return {"total": (pred["total"], measured["total"]), "per_layer": per_layer, "mismatches": mismatches}


__all__ = ["compare", "profile_program"]
