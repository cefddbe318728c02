"""The runtime: one API to run an exported artifact on interchangeable backends, and
`vitforge run`.

Backends (all take an image's quantized patches and return an :class:`Inference`):

* ``golden``: :class:`~.golden.GoldenModel`, quant/'s integer model.
* ``rtl``: the generated accelerator (:class:`~vitforge.hw.axi.AxiTop`) compiled by Verilator and
  driven through pyverilator, with the board's DDR emulated (:class:`vitforge.sim.rtl.RtlDevice`).
* backends that live above sw/ (``board``: the same :class:`AcceleratorBackend` on a ZCU102 over
  PYNQ, :mod:`vitforge.boards.zcu102.backend`) are found through the entry-point group
  :data:`BACKEND_GROUP`: each is a callable ``make(*, artifact_root, manifest, hw, program, budget,
  **options) -> Backend``, so sw/ never imports them.

:class:`AcceleratorBackend` is the driver both hardware backends share: it checks that the
hardware was built for the artifact's config (the ``CONFIG`` register), lays out the program,
the input stream and the output buffer in memory (hw/axi.py's layout), starts the run, waits
for the interrupt with a cycle budget, and reads back the logits, the token count, the cycle
count and the per-instruction profile (summed into per-layer cycles by the program's layer
names). A run that does not finish in time raises :class:`AcceleratorTimeout` naming the
instruction and layer it was stuck in.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from vitforge.hw import axi, units
from vitforge.hw import compiler as hwp
from vitforge.hw.config import HwConfig, get_preset
from vitforge.hw.isa import TOKENS, Op

from .artifact import ArtifactError, read_program
from .export import IntModel, load_artifact
from .golden import GoldenModel

#: Backends this module builds itself.
BACKENDS = ("golden", "rtl")
#: Entry-point group of the backends that live above sw/ (pyproject.toml's ``vitforge.backends``).
BACKEND_GROUP = "vitforge.backends"


def _plugin_backends() -> dict:
    """``{name: entry point}`` of the installed :data:`BACKEND_GROUP` entry points."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=BACKEND_GROUP) if ep.name not in BACKENDS}


def backend_names() -> tuple[str, ...]:
    """Every backend ``Runtime`` can make: :data:`BACKENDS`, then the installed entry points."""
    return BACKENDS + tuple(sorted(_plugin_backends()))


@dataclass
class Inference:
    """One image's result.

    Attributes:
        logits: int8 codes ``(num_classes,)`` (scale: the artifact's ``output_scale``).
        tokens: tokens the last encoder block ran on (after the last selector).
        cycles: accelerator cycles (controller start to ``END``); None for the golden model.
        layer_cycles: cycles per layer (program order); empty for the golden model.
        instr_cycles: cycles per instruction, dispatch to next dispatch (the last: to ``END``'s
            completion); empty for the golden model.
    """

    logits: torch.Tensor
    tokens: int
    cycles: int | None = None
    layer_cycles: dict[str, int] = field(default_factory=dict)
    instr_cycles: list[int] = field(default_factory=list)


class Backend(Protocol):
    """What :class:`Runtime` needs from a backend."""

    name: str

    def infer(self, codes: torch.Tensor) -> Inference:
        """Run one image given as quantized patches ``(num_patches, in_features)``."""
        ...

    def close(self) -> None:
        ...


class Device(Protocol):
    """A built accelerator (:class:`~vitforge.hw.axi.AxiTop`) with memory beside it: the RTL
    simulator or the board."""

    config: HwConfig

    def write_reg(self, addr: int, value: int) -> None: ...

    def read_reg(self, addr: int) -> int: ...

    def write_mem(self, addr: int, data: bytes) -> None: ...

    def read_mem(self, addr: int, n: int) -> bytes: ...

    def wait_irq(self, max_cycles: int) -> int:
        """Wait until the interrupt rises or ``max_cycles`` pass; returns the cycles waited."""
        ...

    def close(self) -> None: ...


class AcceleratorError(RuntimeError):
    """The accelerator reported an error or gave an inconsistent result."""


class AcceleratorTimeout(AcceleratorError, TimeoutError):
    """The accelerator did not finish within its cycle budget."""


class GoldenBackend:
    """quant/'s integer model (the reference every other backend must equal)."""

    name = "golden"

    def __init__(self, model: IntModel) -> None:
        self.model = GoldenModel(model)

    def infer(self, codes: torch.Tensor) -> Inference:
        logits, _, tokens = self.model.run_codes(codes)
        return Inference(logits, tokens[-1])

    def close(self) -> None:
        pass


# --- the artifact's program ---------------------------------------------------------------------


@dataclass
class ArtifactProgram:
    """The compiled program an artifact carries: instruction words, memory images, LOAD table,
    layer names, input and output shapes."""

    words: list[int]
    program: hwp.Program

    @classmethod
    def load(cls, root: Path, manifest: dict) -> ArtifactProgram:
        return cls(*read_program(root, manifest))


def _ceil(x: int, align: int) -> int:
    return -(-x // align) * align


def cycle_budget(cfg: HwConfig, program: hwp.Program) -> int:
    """A generous bound on one run's cycles: 8x a simple count of the work at the token maximum
    (each unit's ``budget`` of :mod:`vitforge.hw.units`; LOAD/STORE as word loops)."""
    work = 0
    for ins in program.instrs:
        if ins.op in (Op.LOAD, Op.STORE):
            work += units.words_budget(cfg, ins)
        elif ins.op not in (Op.END, Op.SYNC):
            work += units.by_op(ins.op).budget(cfg, ins)
        work += 8
    return 8 * work + 100_000


class AcceleratorBackend:
    """The driver of an :class:`~vitforge.hw.axi.AxiTop` behind a :class:`Device` (see the module docstring).

    Args:
        device: the simulator's or the board's device.
        hw: the artifact's hardware config (the device must have been built for it).
        program: the artifact's program.
        name: the backend name to report.
        budget: cycles one image may take before :class:`AcceleratorTimeout` (default: :func:`cycle_budget`).
        base: byte address of the first buffer in the device's memory (4 KiB aligned).
    """

    def __init__(self, device: Device, hw: HwConfig, program: ArtifactProgram, name: str,
                 budget: int | None = None, base: int = 0) -> None:
        cfg = hw
        if base % hw.axi_align:
            raise ValueError(f"base must be {hw.axi_align}-byte aligned, not {base:#x}")
        self.name, self.device, self.cfg, self.prog = name, device, cfg, program
        if len(program.words) > cfg.imem_depth:
            raise ArtifactError(f"the program has {len(program.words)} instructions; imem_depth is {cfg.imem_depth}")
        magic = device.read_reg(axi.Reg.ID)
        if magic != axi.MAGIC:
            raise AcceleratorError(f"the device's ID register reads {magic:#010x}, not {axi.MAGIC:#010x}")
        built = device.read_reg(axi.Reg.CONFIG)
        if built != axi.config_id(cfg):
            raise AcceleratorError(f"the hardware was built for config {built:#010x}; the artifact's is "
                                   f"{axi.config_id(cfg):#010x} (rebuild it for this preset)")
        self.budget = budget or cycle_budget(cfg, program.program)
        p = program.program
        self.out_words = (p.output_rows if p.output_rows != TOKENS else cfg.max_tokens) * cfg.row_words(p.output_cols)
        prog_bytes = axi.program_image(cfg, program.words)
        probe = axi.stream_image(cfg, p, {hwp.INPUT_BLOB: [0] * (p.input_shape[0] * cfg.row_words(p.input_shape[1]))})
        self.prog_addr = base
        self.out_addr = _ceil(base + len(prog_bytes), cfg.axi_align)
        self.in_addr = _ceil(self.out_addr + axi.output_bytes(cfg, self.out_words), cfg.axi_align)
        self.in_beats = len(probe) * 8 // cfg.bus_bits
        device.write_mem(self.prog_addr, prog_bytes)
        for reg, value in ((axi.Reg.PROG_ADDR_LO, self.prog_addr), (axi.Reg.PROG_ADDR_HI, self.prog_addr >> 32),
                           (axi.Reg.PROG_COUNT, len(program.words)),
                           (axi.Reg.IN_ADDR_LO, self.in_addr), (axi.Reg.IN_ADDR_HI, self.in_addr >> 32),
                           (axi.Reg.IN_BEATS, self.in_beats),
                           (axi.Reg.OUT_ADDR_LO, self.out_addr), (axi.Reg.OUT_ADDR_HI, self.out_addr >> 32)):
            device.write_reg(reg, value & 0xFFFFFFFF)

    def infer(self, codes: torch.Tensor) -> Inference:
        cfg, p = self.cfg, self.prog.program
        if tuple(codes.shape) != tuple(p.input_shape):
            raise ValueError(f"input codes must have shape {tuple(p.input_shape)}, not {tuple(codes.shape)}")
        stream = axi.stream_image(cfg, p, {hwp.INPUT_BLOB: hwp.pack_matrix(cfg, codes)})
        self.device.write_mem(self.in_addr, stream)
        self.device.write_reg(axi.Reg.CTRL, 1)
        self.device.wait_irq(self.budget)
        status = axi.Status(self.device.read_reg(axi.Reg.STATUS))
        if not status & axi.Status.DONE:
            k = self.device.read_reg(axi.Reg.INSTR)
            where = f"instruction {k} ({p.instrs[k].op.name}) of layer {p.layers[k]!r}" if k < len(p.instrs) \
                else f"instruction {k}"
            raise AcceleratorTimeout(f"{self.name}: the accelerator did not finish within {self.budget} cycles; "
                                     f"it is at {where} (STATUS {status!r})")
        bad = status & (axi.Status.ERROR | axi.Status.BUS_ERROR | axi.Status.ADDR_ERROR | axi.Status.IN_LEFT)
        if bad:
            k = self.device.read_reg(axi.Reg.INSTR)
            raise AcceleratorError(f"{self.name}: the accelerator stopped with {bad!r} at instruction {k} "
                                   f"(layer {p.layers[k] if k < len(p.layers) else '?'!r})")
        out = axi.unpack_beats(cfg, self.device.read_mem(self.out_addr, axi.output_bytes(cfg, self.out_words)),
                               cfg.word_bits)
        rows = 1 if p.output_rows == TOKENS else p.output_rows
        logits = hwp.unpack_matrix(cfg, out, rows, p.output_cols)[0]
        cycles = self.device.read_reg(axi.Reg.CYCLES)
        starts = [self.device.read_reg(axi.PROFILE_BASE + 4 * i) for i in range(len(self.prog.words))]
        ends = [*starts[1:], cycles]
        spans = [e - s for s, e in zip(starts, ends, strict=True)]
        layer_cycles: dict[str, int] = {}
        for name, span in zip(p.layers, spans, strict=True):
            layer_cycles[name] = layer_cycles.get(name, 0) + span
        # The cycles before the first dispatch (fetch and decode) count to the first layer.
        layer_cycles[p.layers[0]] += starts[0]
        return Inference(logits, self.device.read_reg(axi.Reg.TOKENS), cycles, layer_cycles, spans)

    def close(self) -> None:
        self.device.close()


class Runtime:
    """An artifact on a backend: ``Runtime(path, "rtl").infer(image)`` (a context manager: leaving it
    frees the simulator).

    Args:
        artifact: the artifact directory (every blob is checked on load).
        backend: one of :func:`backend_names`.
        budget: cycles per image before a hardware backend times out (default: derived from the program).
        read_latency: the rtl backend's DDR read latency in cycles.
        options: keyword options of an entry-point backend (e.g. ``bitfile`` for ``board``).
    """

    def __init__(self, artifact: str | Path, backend: str = "golden", budget: int | None = None,
                 read_latency: int | None = None, **options) -> None:
        plugins = _plugin_backends()
        if backend not in BACKENDS and backend not in plugins:
            raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(backend_names())} "
                             "(board: see the README's ZCU102 section)")
        if options and backend in BACKENDS:
            raise TypeError(f"backend {backend!r} takes no options ({', '.join(sorted(options))})")
        root = Path(artifact)
        #: What rebuilds this runtime in another process (``run_images(jobs=...)``).
        self.args = (str(root), backend, budget, read_latency)
        self.model, self.manifest = load_artifact(root)
        self.golden = GoldenModel(self.model)
        self.preset = self.manifest["hardware"]["preset"]
        self.hw = get_preset(self.preset)
        if backend == "golden":
            self.backend: Backend = GoldenBackend(self.model)
        elif backend in plugins:
            program = ArtifactProgram.load(root, self.manifest)
            self.backend = plugins[backend].load()(artifact_root=root, manifest=self.manifest, hw=self.hw,
                                                   program=program, budget=budget, **options)
        else:
            from vitforge.hw.timing import DEFAULT_READ_LATENCY
            from vitforge.sim.rtl import RtlDevice

            program = ArtifactProgram.load(root, self.manifest)
            device = RtlDevice(self.hw, read_latency=DEFAULT_READ_LATENCY if read_latency is None else read_latency)
            self.backend = AcceleratorBackend(device, self.hw, program, "rtl", budget)

    def input_codes(self, image: torch.Tensor) -> torch.Tensor:
        return self.golden.input_codes(image)

    def infer(self, image: torch.Tensor) -> Inference:
        """One image ``(C, H, W)``."""
        return self.backend.infer(self.input_codes(image))

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _record(rt: Runtime, i: int, img: torch.Tensor) -> dict:
    """One image on ``rt``'s backend and on the golden model."""
    codes = rt.input_codes(img)
    want, _, _ = rt.golden.run_codes(codes)
    t0 = time.perf_counter()
    got = rt.backend.infer(codes)
    rec = {"i": i, "wall": time.perf_counter() - t0, "pred": int(got.logits.argmax()),
           "equal": bool(torch.equal(got.logits, want)), "cycles": got.cycles, "layers": got.layer_cycles}
    if not rec["equal"]:
        j = int((got.logits != want).nonzero()[0])
        rec["mismatch"] = {"image": i, "index": j, "got": int(got.logits[j]), "expected": int(want[j])}
    return rec


_WORKER: Runtime | None = None


def _worker_init(args: tuple) -> None:
    global _WORKER
    torch.set_num_threads(1)
    _WORKER = Runtime(*args)


def _worker_run(item: tuple[int, torch.Tensor]) -> dict:
    assert _WORKER is not None
    return _record(_WORKER, *item)


def run_images(rt: Runtime, images: torch.Tensor, labels: torch.Tensor | None = None,
               progress: bool = False, jobs: int = 1) -> dict:
    """Every image on ``rt``'s backend and on the golden model; the figures ``vitforge run`` prints.

    ``jobs > 1``: that many worker processes, each with its own :class:`Runtime` (and, for ``rtl``,
    its own simulator instance of the already built model); the results are the same.
    """
    from tqdm import tqdm

    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, not {jobs}")
    items = list(enumerate(images))
    bar = tqdm(total=len(items), desc=rt.backend.name, disable=not progress, leave=False)
    records = []
    if jobs == 1 or len(items) < 2:
        for item in items:
            records.append(_record(rt, *item))
            bar.update()
    else:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(min(jobs, len(items)), _worker_init, (rt.args,)) as pool:
            for rec in pool.imap_unordered(_worker_run, items):
                records.append(rec)
                bar.update()
        records.sort(key=lambda r: r["i"])
    bar.close()
    n = len(records)
    cycles = [r["cycles"] for r in records if r["cycles"] is not None]
    per_layer: dict[str, list[int]] = {}
    for r in records:
        for name, c in r["layers"].items():
            per_layer.setdefault(name, []).append(c)
    out = {
        "backend": rt.backend.name,
        "preset": rt.preset,
        "images": n,
        "exact": sum(r["equal"] for r in records),
        "top1": 100.0 * sum(r["pred"] == int(labels[r["i"]]) for r in records) / n
        if labels is not None and n else None,
        "cycles_per_image": float(np.mean(cycles)) if cycles else None,
        "per_layer_cycles": {k: float(np.mean(v)) for k, v in per_layer.items()},
        "wall_s_per_image": sum(r["wall"] for r in records) / n if n else None,
        "mismatches": [r["mismatch"] for r in records if "mismatch" in r][:5],
        "jobs": jobs,
    }
    if cycles:
        out["clock_mhz"] = rt.hw.clock_mhz
        out["ms_per_image_at_clock"] = out["cycles_per_image"] / (rt.hw.clock_mhz * 1e3)
    return out


# --- CLI ----------------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="run an artifact's test images on a backend and compare every logit with the golden model",
        description="Streams the artifact's test images through a backend (golden: quant/'s integer model; rtl: "
                    "the generated accelerator on Verilator with emulated DDR), compares every logit with the "
                    "golden model's and reports cycles per image and per layer. Exit code 1 if any image differs.")
    p.add_argument("--artifact", type=Path, required=True, metavar="DIR")
    p.add_argument("--backend", choices=backend_names(), default="rtl",
                   help="default rtl; board: on a ZCU102 with PYNQ, the bitstream from $VITFORGE_BITFILE")
    p.add_argument("--images", type=int, default=None, metavar="N", help="the first N test images (default all)")
    p.add_argument("--data", default=None, help="data spec (default: the one recorded in the artifact)")
    p.add_argument("--budget-cycles", type=int, default=None,
                   help="cycles per image before the run counts as hung (default: derived from the program)")
    p.add_argument("--read-latency", type=int, default=None, help="rtl: DDR read latency in cycles (default 16)")
    p.add_argument("--jobs", type=int, default=1, metavar="J",
                   help="worker processes, each with its own simulator (default 1)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> int:
    from .data import load_data

    if args.images is not None and args.images < 1:
        raise ValueError(f"--images must be at least 1, not {args.images}")
    rt = Runtime(args.artifact, args.backend, args.budget_cycles, args.read_latency)
    try:
        ds = (rt.manifest.get("extra") or {}).get("dataset") or {}
        data = load_data(args.data if args.data is not None else ds.get("spec"), seed=ds.get("seed", 0),
                         size=rt.model.config.image_size)
        limit = args.images if args.images is not None else ds.get("limit")
        x, y = data.x_test, data.y_test
        if limit is not None:
            x, y = x[:limit], y[:limit]
        res = run_images(rt, x, y, progress=not args.no_progress and not args.json, jobs=args.jobs)
    finally:
        rt.close()
    if args.json:
        print(json.dumps(res, sort_keys=True))
    else:
        print(f"{res['backend']}: {res['exact']}/{res['images']} images bit-exact with the golden model, "
              f"top-1 {res['top1']:.2f}%")
        if res["cycles_per_image"] is not None:
            print(f"{res['cycles_per_image']:.0f} cycles per image ({res['ms_per_image_at_clock']:.3f} ms at "
                  f"{res['clock_mhz']:g} MHz); {res['wall_s_per_image']:.2f} s wall per image")
            for name, c in res["per_layer_cycles"].items():
                print(f"  {name:<14} {c:12.0f}")
    return 0 if res["exact"] == res["images"] else 1


__all__ = ["BACKENDS", "BACKEND_GROUP", "AcceleratorBackend", "AcceleratorError", "AcceleratorTimeout",
           "ArtifactProgram", "Backend", "Device", "GoldenBackend", "Inference", "Runtime", "backend_names",
           "cycle_budget", "run_images"]
