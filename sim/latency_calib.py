"""Per-instruction cycles of a program on hw/top.py EncoderTop in the Amaranth simulator, and their
comparison with the analytical model of hw/cycles.py.

* :func:`profile_program` — run a :class:`~vitforge.hw.compiler.Program` (ideal ``dma_in`` stream:
  one word per cycle; ``dma_out`` always ready) and latch the ``cycles`` port at every ``issue``
  pulse: per-instruction cycles (dispatch to next dispatch), the token count each ``SELECT`` left,
  the total.
* :func:`profile_program_rtl` — the same on Verilator or Icarus through cocotb (sim/benches/latency.py):
  much faster for the demo model's full-size blocks.
* :func:`compare` — the model's cycles for the same run, per instruction and per layer, with errors.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

import torch

from vitforge.hw.config import BASE, HwConfig, get_preset
from vitforge.hw.isa import Op

from .amsim import load_and_start, simulate


@dataclass(frozen=True)
class Case:
    """A calibration shape: one encoder block (behind a selector if ``selector``) on ``n_tokens``
    tokens, or (``depth > 0``) a whole model of ``depth`` blocks with a selector before block 1.

    ``keep``: the selector's threshold rule (sim/benches/reference.choose_threshold: ``"mixed"``, ``"all"``,
    ``"class_only"``); ``pe``: ``(pe_rows, pe_cols)``; ``hw``: a preset name the shape runs on as is;
    ``unit_lanes``: the row-wise units' lanes (``None``: the preset's, or 1); ``fuse_gelu``: the GELU in the
    GEMM drain path (``None``: the preset's, or off); ``operand_cache_words``: the GEMM's operand cache
    (``None``: the preset's, or BASE's).
    """

    name: str
    dim: int
    heads: int
    mlp: int
    n_tokens: int
    selector: bool = True
    keep: str = "mixed"
    pe: tuple[int, int] = (4, 4)
    depth: int = 0
    hw: str | None = None
    seed: int = 1
    unit_lanes: int | None = None
    fuse_gelu: bool | None = None
    operand_cache_words: int | None = None

    def config(self) -> HwConfig:
        if self.hw is not None:
            cfg = get_preset(self.hw)
        else:
            cfg = dataclasses.replace(BASE, pe_rows=self.pe[0], pe_cols=self.pe[1], act_depth=8192,
                                      weight_depth=2048, param_depth=64, max_tokens=self.n_tokens,
                                      max_embed_dim=self.dim, max_mlp_dim=self.mlp, max_heads=self.heads)
        if self.fuse_gelu is not None:
            cfg = dataclasses.replace(cfg, fuse_gelu=self.fuse_gelu)
        if self.operand_cache_words is not None:
            cfg = dataclasses.replace(cfg, operand_cache_words=self.operand_cache_words)
        return cfg if self.unit_lanes is None else dataclasses.replace(cfg, unit_lanes=self.unit_lanes)

    def build(self) -> tuple[HwConfig, object, dict[str, list[int]], list[bool] | None]:
        """``(hw config, program, runtime inputs, whether each SELECT prunes a token)`` (the last
        from the reference for a block; None for a model: then the model infers it from the rows)."""
        from vitforge.hw import compiler as hwp

        from .benches import reference as block_ref

        cfg = self.config()
        gen = torch.Generator().manual_seed(self.seed)
        x = torch.randint(-128, 128, (self.n_tokens, self.dim), generator=gen)
        p = block_ref.make_block_case(x, dim=self.dim, heads=self.heads, mlp=self.mlp, selector=self.selector,
                                      seed=self.seed, keep=self.keep, num=cfg.numerics)
        pruned = []
        if self.selector:
            pruned = [not bool(block_ref.selector_reference(x, p, cfg.numerics)[1].all())]
        if not self.depth:
            inputs = {hwp.INPUT_BLOB: hwp.pack_matrix(cfg, x)}
            return cfg, block_ref.block_program(cfg, p, self.n_tokens), inputs, pruned
        blocks = [block_ref.as_block(p if i == 1 else block_ref.make_block_params(
            dim=self.dim, heads=self.heads, mlp=self.mlp, selector=False, seed=self.seed + i))
            for i in range(self.depth)]
        if not self.selector:
            blocks[1] = dataclasses.replace(blocks[1], selector=None)
        patch = 16
        model = hwp.Model(
            patch_embed=block_ref.as_linear(block_ref.random_linear(gen, patch, self.dim, 2000.0)),
            cls=torch.randint(-128, 128, (self.dim,), generator=gen),
            pos=torch.randint(-128, 128, (self.n_tokens, self.dim), generator=gen),
            pos_add=hwp.Add(*p.add1), blocks=blocks, norm=blocks[0].ln1,
            head=block_ref.as_linear(block_ref.random_linear(gen, self.dim, 10, 2000.0)))
        patches = torch.randint(-128, 128, (self.n_tokens - 1, patch), generator=gen)
        return cfg, hwp.compile_model(model, cfg), {hwp.INPUT_BLOB: hwp.pack_matrix(cfg, patches)}, None


#: Shapes the default test tier runs in the Amaranth simulator (seconds each).
SMALL_CASES = (
    Case("d16-h2-n9-sel-mixed", dim=16, heads=2, mlp=32, n_tokens=9),
    Case("d32-h2-n13-dense", dim=32, heads=2, mlp=64, n_tokens=13, selector=False),
    Case("pe2x8-d32-h2-n11-sel-mixed", dim=32, heads=2, mlp=96, n_tokens=11, pe=(2, 8)),
    Case("pe8x4-d16-h2-n7-sel-all", dim=16, heads=2, mlp=48, n_tokens=7, keep="all", pe=(8, 4)),
    Case("model-d16-n5-depth2", dim=16, heads=2, mlp=32, n_tokens=5, depth=2),
)
#: Shapes at unit_lanes > 1 (the row-wise units' lanes) the default tier runs in the Amaranth simulator.
LANES_CASES = (
    Case("u2-d16-h2-n9-sel-mixed", dim=16, heads=2, mlp=32, n_tokens=9, unit_lanes=2),
    Case("u4-d32-h2-n13-dense", dim=32, heads=2, mlp=64, n_tokens=13, selector=False, unit_lanes=4),
    Case("u4-pe2x8-d32-h2-n11-sel-mixed", dim=32, heads=2, mlp=96, n_tokens=11, pe=(2, 8), unit_lanes=4),
    Case("u8-pe2x8-d16-h2-n7-sel-all", dim=16, heads=2, mlp=32, n_tokens=7, pe=(2, 8), keep="all", unit_lanes=8),
    Case("u2-model-d16-n5-depth2", dim=16, heads=2, mlp=32, n_tokens=5, depth=2, unit_lanes=2),
)
#: Shapes with the GELU fused into the GEMM drain path (``fuse_gelu``), in the Amaranth simulator.
FUSED_GELU_CASES = (
    Case("fg-d16-h2-n9-sel-mixed", dim=16, heads=2, mlp=32, n_tokens=9, fuse_gelu=True),
    Case("fg-u4-pe2x8-d32-h2-n11-sel-mixed", dim=32, heads=2, mlp=96, n_tokens=11, pe=(2, 8), unit_lanes=4,
         fuse_gelu=True),
    Case("fg-model-d16-n5-depth2", dim=16, heads=2, mlp=32, n_tokens=5, depth=2, fuse_gelu=True),
)
#: Shapes at other operand-cache sizes (``operand_cache_words``) than BASE's, in the Amaranth simulator: 16
#: words (halves of 8: Q K^T's A fits, its B does not; attn x V's neither; the selector's one-block
#: broadcast B does) and none.
CACHE_CASES = (
    Case("c16-d16-h2-n9-sel-mixed", dim=16, heads=2, mlp=32, n_tokens=9, operand_cache_words=16),
    Case("c0-d32-h2-n13-dense", dim=32, heads=2, mlp=64, n_tokens=13, selector=False, operand_cache_words=0),
)
#: The demo model's shapes on the demo preset (Verilator: tens of seconds each, after a build).
DEMO_CASES = (
    Case("demo-block-n65-sel-mixed", dim=64, heads=4, mlp=128, n_tokens=65, hw="demo"),
    Case("demo-block-n65-dense", dim=64, heads=4, mlp=128, n_tokens=65, selector=False, hw="demo"),
    Case("demo-block-n33-sel-class-only", dim=64, heads=4, mlp=128, n_tokens=33, keep="class_only", hw="demo"),
    Case("demo-model-n65-depth4", dim=64, heads=4, mlp=128, n_tokens=65, depth=4, hw="demo"),
)


def calibrate(case: Case, sim: str = "amaranth", port: str = "stream") -> dict:
    """Run ``case`` on the RTL (``"amaranth"``, ``"verilator"`` or ``"icarus"``) and compare the model."""
    from vitforge.hw.cycles import CycleModel

    cfg, prog, inputs, pruned = case.build()
    if sim == "amaranth":
        measured = profile_program(cfg, prog, inputs)
    else:
        measured = profile_program_rtl(cfg, prog, inputs, sim)
    out = compare(CycleModel(cfg, port), prog, measured, pruned)
    out.update(case=case.name, instructions=len(prog.instrs), select_tokens=measured["select_tokens"])
    return out


def profile_program(cfg, program, inputs: dict[str, list[int]], max_cycles: int = 20_000_000) -> dict:
    """Run ``program`` on EncoderTop; returns ``{"per_instr", "issue", "total", "select_tokens",
    "per_layer", "done", "error"}``.

    ``per_instr[i]``: cycles from instruction ``i``'s dispatch to the next one's (``END``: 1);
    ``issue[i]``: the ``cycles`` value at its dispatch; ``select_tokens``: the token count after each
    ``SELECT``; ``per_layer``: ``per_instr`` summed by ``program.layers`` (start-up cycles in the first).
    """
    from vitforge.hw.isa import assemble
    from vitforge.hw.timing import START_CYCLES
    from vitforge.hw.top import EncoderTop

    dut = EncoderTop(config=cfg)
    feed = program.dma_words(inputs)
    words = assemble(program.instrs)
    out: dict = {"issue": {}, "tokens_at": {}}
    started = []

    async def run(ctx):
        await load_and_start(ctx, dut, words)
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


def profile_program_rtl(cfg, program, inputs: dict[str, list[int]], sim: str = "verilator") -> dict:
    """:func:`profile_program` on a Verilog simulator (``"verilator"`` or ``"icarus"``); same result keys."""
    import json
    import tempfile
    from pathlib import Path

    from vitforge.hw.isa import assemble
    from vitforge.hw.timing import START_CYCLES
    from vitforge.hw.top import EncoderTop

    from .benches.runner import run_bench

    with tempfile.TemporaryDirectory() as tmp:
        job, out = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job.write_text(json.dumps({"words": assemble(program.instrs), "feed": program.dma_words(inputs)}))
        run_bench(name="latency_top", design=lambda: EncoderTop(config=cfg), key=cfg,
                  bench="vitforge.sim.benches.latency", sim=sim,
                  params={"config": cfg.to_json(), "job": str(job), "out": str(out)})
        res = json.loads(out.read_text())
    seen = {instr: (cycles, tokens) for instr, cycles, tokens in res["issues"]}
    n = len(program.instrs)
    missing = [i for i in range(n) if i not in seen]
    if missing:
        raise RuntimeError(f"instructions {missing[:5]} were never dispatched")
    issue = [seen[i][0] for i in range(n)]
    if issue[0] != START_CYCLES:
        raise RuntimeError(f"the first dispatch came at cycle {issue[0]}, not {START_CYCLES}")
    per_instr = [b - a for a, b in itertools.pairwise(issue)] + [res["total"] - issue[-1]]
    select_tokens = [seen[i + 1][1] for i, ins in enumerate(program.instrs) if ins.op == Op.SELECT]
    return {"per_instr": per_instr, "issue": issue, "total": res["total"], "select_tokens": select_tokens,
            "per_layer": _per_layer(program, per_instr), "done": True, "error": False}


def _per_layer(program, per_instr: list[int]) -> dict[str, int]:
    from vitforge.hw.timing import START_CYCLES

    layers = program.layers or ["program"] * len(per_instr)
    out: dict[str, int] = {}
    for i, (name, c) in enumerate(zip(layers, per_instr, strict=True)):
        out[name] = out.get(name, 0) + c + (START_CYCLES if i == 0 else 0)
    return out


def compare(model, program, measured: dict, pruned: list[bool] | None = None) -> dict:
    """The model (a :class:`~vitforge.hw.cycles.CycleModel`) against a :func:`profile_program` run.

    Returns ``{"total": (model, rtl), "per_layer": {layer: {"model", "rtl", "error"}},
    "mismatches": [(index, instr text, model, rtl)]}`` (``error``: relative, model over RTL minus 1).
    """
    pred = model.program_cycles(program, measured["select_tokens"], pruned)
    per_layer = {name: {"model": pred["per_layer"][name], "rtl": rtl, "error": pred["per_layer"][name] / rtl - 1}
                 for name, rtl in measured["per_layer"].items()}
    mismatches = [(i, str(ins), p, r) for i, (ins, p, r) in
                  enumerate(zip(program.instrs, pred["per_instr"], measured["per_instr"], strict=True)) if p != r]
    return {"total": (pred["total"], measured["total"]), "per_layer": per_layer, "mismatches": mismatches}


__all__ = ["CACHE_CASES", "DEMO_CASES", "FUSED_GELU_CASES", "LANES_CASES", "SMALL_CASES", "Case", "calibrate",
           "compare", "profile_program", "profile_program_rtl"]
