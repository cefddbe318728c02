"""The board-level top: :class:`AxiTop` wraps :class:`~vitforge.hw.top.EncoderTop` with an AXI4-Lite
register file and an AXI4 master memory port, and the host-side layout of what it reads.

The host (the ZCU102's ARM cores, or the simulator runtime that emulates the board's DDR) puts
three buffers in memory, writes their addresses into the register file and sets ``CTRL.start``:

1. **program**: the instruction stream (:func:`program_image`); each 192-bit instruction takes
   ``cfg.beats(INSTR_BITS)`` beats. The top reads it into the instruction memory first.
2. **input stream**: every word the program's ``LOAD``\\ s take, in order (:func:`stream_image`):
   a weight or activation word is ``cfg.beats(word_bits)`` beats, a parameter word
   ``cfg.beats(param_word_bits)`` beats (the controller's ``load_param`` says which).
3. **output**: ``STORE`` words land here, ``cfg.beats(word_bits)`` beats each, in order.

Words are little endian and zero-padded to whole beats. Buffers must be 4 KiB aligned (reads go
in bursts of up to ``cfg.axi_burst`` beats that then never cross a 4 KiB boundary); a start with a
misaligned address stops at once with ``STATUS.addr_error``.

Register file (32-bit registers, byte addresses; :class:`Reg`): ``CTRL`` (write bit 0 = start),
``STATUS`` (:class:`Status` bits), ``ID`` (:data:`MAGIC`), ``CONFIG`` (:func:`config_id` of the
HwConfig this was built from: the runtime refuses an artifact for another config), the buffer
addresses and lengths, the cycle counters, the executing instruction and the token count. The
profile window at :data:`PROFILE_BASE` + 4 i holds the controller's ``cycles`` value at which
instruction ``i`` was dispatched (per-instruction, hence per-layer, cycle counts on the board).

Timing: reads sustain one beat per cycle while the controller takes words (up to
``cfg.axi_max_inflight`` beats in flight); a ``LOAD`` word costs ``beats`` cycles once the data
flows. Writes are single beats, one at a time (outputs are a few words). ``CYCLES`` counts the
controller's cycles (start to ``END``), ``TOTAL_CYCLES`` also the program fetch and the drain.
"""

from __future__ import annotations

import enum
import hashlib
import json

from amaranth.hdl import Array, Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import Out

from .bus import axi4, axi4_lite, flat
from .config import HwConfig
from .controller import CYCLE_BITS
from .isa import INSTR_BITS, Mem
from .top import EncoderTop

#: Byte address of the profile window (registers lie below it).
PROFILE_BASE = 0x1000
#: ``ID`` register value: "VF" and the register-map version.
MAGIC = 0x5646_0001


class Reg(enum.IntEnum):
    """Register byte addresses."""

    CTRL = 0x00
    STATUS = 0x04
    ID = 0x08
    CONFIG = 0x0C
    PROG_ADDR_LO = 0x10
    PROG_ADDR_HI = 0x14
    PROG_COUNT = 0x18
    IN_ADDR_LO = 0x20
    IN_ADDR_HI = 0x24
    IN_BEATS = 0x28
    OUT_ADDR_LO = 0x30
    OUT_ADDR_HI = 0x34
    OUT_BEATS = 0x38
    CYCLES = 0x40
    TOTAL_CYCLES = 0x44
    INSTR = 0x48
    TOKENS = 0x4C
    IN_BEATS_READ = 0x50


class Status(enum.IntFlag):
    """``STATUS`` bits."""

    BUSY = 1
    DONE = 2
    ERROR = 4  # the controller stopped on an opcode whose unit is not built
    BUS_ERROR = 8  # a read or write response was not OKAY
    ADDR_ERROR = 16  # a buffer address was not cfg.axi_align-aligned
    IN_LEFT = 32  # the program ended before taking every input beat (the rest was drained)


def config_id(cfg: HwConfig) -> int:
    """A 32-bit fingerprint of ``cfg`` (first bytes of the SHA-256 of its JSON)."""
    text = json.dumps(cfg.to_json(), sort_keys=True)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


# --- host-side layout --------------------------------------------------------------------------


def pack_beats(cfg: HwConfig, words: list[int], bits: int) -> bytes:
    """``words`` (``bits`` wide) as beats on the memory port: little endian, padded to whole beats."""
    nbytes = cfg.beats(bits) * cfg.bus_bits // 8
    mask = (1 << bits) - 1
    out = bytearray()
    for w in words:
        if not 0 <= w <= mask:
            raise ValueError(f"word {w:#x} does not fit {bits} bits")
        out += w.to_bytes(nbytes, "little")
    return bytes(out)


def unpack_beats(cfg: HwConfig, data: bytes, bits: int) -> list[int]:
    """Inverse of :func:`pack_beats` (the padding bits are dropped)."""
    nbytes = cfg.beats(bits) * cfg.bus_bits // 8
    if len(data) % nbytes:
        raise ValueError(f"{len(data)} bytes is not a whole number of {nbytes}-byte words")
    mask = (1 << bits) - 1
    return [int.from_bytes(data[i:i + nbytes], "little") & mask for i in range(0, len(data), nbytes)]


def program_image(cfg: HwConfig, words: list[int]) -> bytes:
    """The program buffer of assembled instructions ``words``."""
    return pack_beats(cfg, words, INSTR_BITS)


def stream_image(cfg: HwConfig, program, inputs: dict[str, list[int]]) -> bytes:
    """The input-stream buffer of ``program`` (a :class:`vitforge.hw.compiler.Program`)."""
    out = bytearray()
    for ld in program.loads:
        blob = inputs[ld.blob] if ld.blob in inputs else program.blobs[ld.blob]
        words = blob[ld.offset:ld.offset + ld.count]
        if len(words) != ld.count:
            raise ValueError(f"blob {ld.blob!r} has {len(blob)} words; a LOAD needs {ld.offset}+{ld.count}")
        out += pack_beats(cfg, words, cfg.param_word_bits if ld.mem == Mem.PARAM else cfg.word_bits)
    return bytes(out)


def output_bytes(cfg: HwConfig, words: int) -> int:
    """Bytes of the output buffer for ``words`` ``STORE`` words."""
    return words * cfg.beats(cfg.word_bits) * cfg.bus_bits // 8


# --- hardware ------------------------------------------------------------------------------------


def reg_addr_bits(cfg: HwConfig) -> int:
    """Byte-address width of the register file: registers below :data:`PROFILE_BASE`, then one 32-bit
    profile word per instruction of the instruction memory."""
    return (PROFILE_BASE + 4 * cfg.imem_depth - 1).bit_length()


def signature(cfg: HwConfig) -> dict:
    """AxiTop's ports: the AXI4-Lite slave ``s_axil_*`` (the register file), the AXI4 master ``m_axi_*``
    (the memory port, ``cfg.bus_bits`` wide) and the level interrupt ``irq`` (``STATUS.done``)."""
    return {
        **flat("s_axil", axi4_lite(reg_addr_bits(cfg)).flip()),
        **flat("m_axi", axi4(cfg.axi_addr_bits, cfg.bus_bits)),
        "irq": Out(1),
    }


class AxiTop(wiring.Component):
    """:class:`~vitforge.hw.top.EncoderTop` behind an AXI4-Lite register file and an AXI4 master.

    See the module docstring for the register map, the buffers and the timing. Port names follow
    the ``s_axil_*`` / ``m_axi_*`` convention (cocotbext-axi's ``from_prefix`` and Vivado's
    interface inference both read them). IDs are always 0; bursts are INCR.
    """

    def __init__(self, *, config: HwConfig):
        if not isinstance(config, HwConfig):
            raise TypeError(f"config must be a HwConfig, not {type(config).__name__}")
        self._config = config
        super().__init__(signature(config))

    @property
    def config(self) -> HwConfig:
        return self._config

    def elaborate(self, platform):
        cfg = self._config
        bus, bus_bytes = cfg.bus_bits, cfg.bus_bits // 8
        m = Module()
        m.submodules.core = core = EncoderTop(config=cfg)
        m.submodules.profile = profile = Memory(shape=CYCLE_BITS, depth=cfg.imem_depth, init=[])
        prof_w, prof_r = profile.write_port(), profile.read_port()

        # --- registers ---------------------------------------------------------------------------
        prog_addr, in_addr, out_addr = Signal(cfg.axi_addr_bits), Signal(cfg.axi_addr_bits), Signal(cfg.axi_addr_bits)
        prog_count, in_beats = Signal(32), Signal(32)
        out_beats, in_read, total = Signal(32), Signal(32), Signal(32)
        done, busy_top = Signal(), Signal()
        bus_error, addr_error, in_left = Signal(), Signal(), Signal()
        start_req = Signal()

        n_instr = cfg.beats(INSTR_BITS)
        n_word = cfg.beats(cfg.word_bits)
        n_param = cfg.beats(cfg.param_word_bits)
        n_max = max(n_instr, n_word, n_param)

        # --- AXI4-Lite slave ---------------------------------------------------------------------
        bvalid, rvalid, r_pending = Signal(), Signal(), Signal()
        r_addr = Signal(reg_addr_bits(cfg))
        rdata = Signal(32)
        m.d.comb += [self.s_axil_bvalid.eq(bvalid), self.s_axil_rvalid.eq(rvalid), self.s_axil_rdata.eq(rdata),
                     self.s_axil_bresp.eq(0), self.s_axil_rresp.eq(0)]
        write = Signal()
        m.d.comb += write.eq(self.s_axil_awvalid & self.s_axil_wvalid & ~bvalid)
        m.d.comb += [self.s_axil_awready.eq(write), self.s_axil_wready.eq(write)]
        with m.If(write):
            m.d.sync += bvalid.eq(1)
            data = self.s_axil_wdata
            with m.Switch(self.s_axil_awaddr):
                with m.Case(Reg.CTRL):
                    m.d.comb += start_req.eq(data[0])
                for reg, sig, part in ((Reg.PROG_ADDR_LO, prog_addr, 0), (Reg.PROG_ADDR_HI, prog_addr, 1),
                                       (Reg.IN_ADDR_LO, in_addr, 0), (Reg.IN_ADDR_HI, in_addr, 1),
                                       (Reg.OUT_ADDR_LO, out_addr, 0), (Reg.OUT_ADDR_HI, out_addr, 1)):
                    with m.Case(reg):
                        lo, hi = 32 * part, min(32 * part + 32, cfg.axi_addr_bits)
                        m.d.sync += sig[lo:hi].eq(data[:hi - lo])
                with m.Case(Reg.PROG_COUNT):
                    m.d.sync += prog_count.eq(data)
                with m.Case(Reg.IN_BEATS):
                    m.d.sync += in_beats.eq(data)
        with m.If(bvalid & self.s_axil_bready):
            m.d.sync += bvalid.eq(0)

        m.d.comb += self.s_axil_arready.eq(~rvalid & ~r_pending)
        m.d.comb += prof_r.addr.eq((self.s_axil_araddr - PROFILE_BASE) >> 2)
        with m.If(self.s_axil_arvalid & ~rvalid & ~r_pending):
            m.d.sync += [r_addr.eq(self.s_axil_araddr), r_pending.eq(1)]
        status = Cat(busy_top, done, core.error & done, bus_error, addr_error, in_left)
        with m.If(r_pending):  # the profile memory's read data is valid now
            m.d.sync += [r_pending.eq(0), rvalid.eq(1)]
            with m.If(r_addr >= PROFILE_BASE):
                m.d.sync += rdata.eq(prof_r.data)
            with m.Else():
                with m.Switch(r_addr):
                    regs = {Reg.STATUS: status, Reg.ID: MAGIC, Reg.CONFIG: config_id(cfg),
                            Reg.PROG_ADDR_LO: prog_addr[:32], Reg.PROG_ADDR_HI: prog_addr[32:],
                            Reg.PROG_COUNT: prog_count, Reg.IN_ADDR_LO: in_addr[:32], Reg.IN_ADDR_HI: in_addr[32:],
                            Reg.IN_BEATS: in_beats, Reg.OUT_ADDR_LO: out_addr[:32], Reg.OUT_ADDR_HI: out_addr[32:],
                            Reg.OUT_BEATS: out_beats, Reg.CYCLES: core.cycles, Reg.TOTAL_CYCLES: total,
                            Reg.INSTR: core.instr, Reg.TOKENS: core.tokens, Reg.IN_BEATS_READ: in_read}
                    for reg, value in regs.items():
                        with m.Case(reg):
                            m.d.sync += rdata.eq(value)
                    with m.Default():
                        m.d.sync += rdata.eq(0)
        with m.If(rvalid & self.s_axil_rready):
            m.d.sync += rvalid.eq(0)

        # --- profile: the cycle count at each dispatch -------------------------------------------
        m.d.comb += [prof_w.addr.eq(core.instr), prof_w.data.eq(core.cycles), prof_w.en.eq(core.issue)]

        # --- read engine: AR requests for [rd_addr, rd_addr + rd_left beats) ----------------------
        rd_addr = Signal(cfg.axi_addr_bits)
        rd_left = Signal(32)
        inflight = Signal(range(cfg.axi_max_inflight + 1))
        burst = Signal(range(cfg.axi_burst + 1))
        m.d.comb += burst.eq(Mux(rd_left >= cfg.axi_burst, cfg.axi_burst, rd_left))
        ar_ok = Signal()
        m.d.comb += [
            ar_ok.eq((rd_left != 0) & (inflight + burst <= cfg.axi_max_inflight)),
            self.m_axi_arvalid.eq(ar_ok), self.m_axi_araddr.eq(rd_addr), self.m_axi_arlen.eq(burst - 1),
            self.m_axi_arsize.eq(bus_bytes.bit_length() - 1), self.m_axi_arburst.eq(1), self.m_axi_arid.eq(0),
        ]
        r_fire = Signal()
        m.d.comb += r_fire.eq(self.m_axi_rvalid & self.m_axi_rready)
        issued = Signal()
        m.d.comb += issued.eq(ar_ok & self.m_axi_arready)
        with m.If(issued):
            m.d.sync += [rd_addr.eq(rd_addr + burst * bus_bytes), rd_left.eq(rd_left - burst)]
        m.d.sync += inflight.eq(inflight + Mux(issued, burst, 0) - r_fire)
        with m.If(r_fire & (self.m_axi_rresp != 0)):
            m.d.sync += bus_error.eq(1)

        # --- gearbox: beats -> instructions (boot) or LOAD words (run) -----------------------------
        beats = Array(Signal(bus, name=f"beat{i}") for i in range(max(1, n_max - 1)))
        count = Signal(range(n_max))
        boot = Signal()
        need = Signal(range(n_max + 1))
        m.d.comb += need.eq(Mux(boot, n_instr, Mux(core.load_param, n_param, n_word)))

        def word(n: int, width: int):
            return Cat(*[beats[i] for i in range(n - 1)], self.m_axi_rdata)[:width]

        sink_ready, last = Signal(), Signal()
        m.d.comb += last.eq(count == need - 1)
        instr_idx = Signal(range(cfg.imem_depth + 1))
        draining = Signal()
        m.d.comb += [
            sink_ready.eq(Mux(boot, 1, core.dma_in.ready)),
            self.m_axi_rready.eq(draining | sink_ready),
            core.dma_in.valid.eq(~boot & ~draining & last & self.m_axi_rvalid),
            core.dma_in.payload.eq(Mux(core.load_param, word(n_param, cfg.param_word_bits),
                                       word(n_word, cfg.word_bits))),
            core.host_mem.eq(Mem.IMEM),
            core.host_addr.eq(instr_idx),
            core.host_wdata.eq(word(n_instr, INSTR_BITS)),
            core.host_we.eq(boot & last & self.m_axi_rvalid),
        ]
        with m.If(r_fire & ~draining):
            with m.If(last):
                m.d.sync += count.eq(0)
            with m.Else():
                m.d.sync += [beats[count].eq(self.m_axi_rdata), count.eq(count + 1)]
            with m.If(~boot):
                m.d.sync += in_read.eq(in_read + 1)
        with m.If(boot & last & r_fire):
            m.d.sync += instr_idx.eq(instr_idx + 1)

        # --- write engine: one STORE word -> single-beat writes -------------------------------------
        w_buf = Signal(n_word * bus)
        w_left = Signal(range(n_word + 1))
        w_ptr = Signal(cfg.axi_addr_bits)
        aw_pending, w_pending, b_pending = Signal(), Signal(), Signal()
        m.d.comb += [
            self.m_axi_awid.eq(0), self.m_axi_awaddr.eq(w_ptr), self.m_axi_awlen.eq(0),
            self.m_axi_awsize.eq(bus_bytes.bit_length() - 1), self.m_axi_awburst.eq(1),
            self.m_axi_awvalid.eq(aw_pending), self.m_axi_wvalid.eq(w_pending),
            self.m_axi_wdata.eq(w_buf[:bus]), self.m_axi_wstrb.eq((1 << bus_bytes) - 1), self.m_axi_wlast.eq(1),
            self.m_axi_bready.eq(b_pending),
        ]
        writer_idle = Signal()
        m.d.comb += writer_idle.eq((w_left == 0) & ~aw_pending & ~w_pending & ~b_pending)
        m.d.comb += core.dma_out.ready.eq(writer_idle)
        with m.If(core.dma_out.valid & writer_idle):
            m.d.sync += [w_buf.eq(core.dma_out.payload), w_left.eq(n_word), aw_pending.eq(1), w_pending.eq(1),
                         b_pending.eq(1)]
        with m.If(aw_pending & self.m_axi_awready):
            m.d.sync += aw_pending.eq(0)
        with m.If(w_pending & self.m_axi_wready):
            m.d.sync += w_pending.eq(0)
        with m.If(b_pending & self.m_axi_bvalid & ~aw_pending & ~w_pending):
            m.d.sync += [b_pending.eq(0), w_ptr.eq(w_ptr + bus_bytes), out_beats.eq(out_beats + 1),
                         w_buf.eq(w_buf >> bus), w_left.eq(w_left - 1)]
            with m.If(self.m_axi_bresp != 0):
                m.d.sync += bus_error.eq(1)
            if n_word > 1:
                with m.If(w_left > 1):  # the next beat of the same word
                    m.d.sync += [aw_pending.eq(1), w_pending.eq(1), b_pending.eq(1)]

        # --- sequencing ------------------------------------------------------------------------------
        m.d.comb += [self.irq.eq(done), core.start.eq(0)]
        with m.If(busy_top):
            m.d.sync += total.eq(total + 1)
        mask = cfg.axi_align - 1
        with m.FSM():
            with m.State("IDLE"):
                with m.If(start_req):
                    m.d.sync += [done.eq(0), bus_error.eq(0), addr_error.eq(0), in_left.eq(0), total.eq(0),
                                 out_beats.eq(0), in_read.eq(0), count.eq(0), instr_idx.eq(0), w_ptr.eq(out_addr)]
                    with m.If(((prog_addr | in_addr | out_addr) & mask).any()):
                        m.d.sync += [addr_error.eq(1), done.eq(1)]
                    with m.Else():
                        m.d.sync += [busy_top.eq(1), boot.eq(1), rd_addr.eq(prog_addr),
                                     rd_left.eq(prog_count * n_instr)]
                        m.next = "BOOT"
            with m.State("BOOT"):
                with m.If(instr_idx == prog_count):
                    m.d.sync += [boot.eq(0), rd_addr.eq(in_addr), rd_left.eq(in_beats), count.eq(0)]
                    m.d.comb += core.start.eq(1)
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(core.done & writer_idle & ~core.dma_out.valid):
                    m.d.sync += [draining.eq(1), rd_left.eq(0), in_left.eq(in_read != in_beats)]
                    m.next = "DRAIN"
            with m.State("DRAIN"):  # take the read beats still in flight
                with m.If(inflight == 0):
                    m.d.sync += [draining.eq(0), busy_top.eq(0), done.eq(1)]
                    m.next = "IDLE"
        return m


__all__ = ["MAGIC", "PROFILE_BASE", "AxiTop", "Reg", "Status", "config_id", "output_bytes", "pack_beats",
           "program_image", "reg_addr_bits", "signature", "stream_image", "unpack_beats"]
