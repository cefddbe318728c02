"""Encoder-block accelerator top: scratchpads, instruction memory and the controller.

:class:`EncoderTop` holds the four memories of :mod:`vitforge.hw.config` (``amaranth.lib.memory``,
one synchronous read port and one write port each) and the :class:`~vitforge.hw.controller.Controller`
with its datapath. A host port reads and writes every memory while the controller is idle (the
AXI wrapper of a later issue replaces it); ``LOAD``/``STORE`` move words through the ``dma_in`` /
``dma_out`` streams.
"""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .config import HwConfig
from .controller import Controller
from .isa import INSTR_BITS, MAX_ADDR_BITS, Mem

#: Controller output ports the top passes through unchanged.
PASSED_THROUGH = ("busy", "done", "error", "cycles", "tokens", "instr", "issue", "load_param")


class EncoderTop(wiring.Component):
    """The accelerator: memories + controller.

    Ports:
        start, busy, done, error, cycles, tokens: the controller's (see
            :class:`~vitforge.hw.controller.Controller`).
        host_mem (:class:`~vitforge.hw.isa.Mem`), host_addr, host_wdata, host_we: write one word per cycle
            (the low bits of ``host_wdata`` are the word) while not busy;
        host_rdata: the activation word at ``host_addr``, one cycle after it is presented.
        dma_in / dma_out: the ``LOAD`` / ``STORE`` streams.
        instr, issue, load_param: the controller's (profiling and the memory port's beat sizing).

    Host writes while busy are ignored.
    """

    def __init__(self, *, config: HwConfig):
        if not isinstance(config, HwConfig):
            raise TypeError(f"config must be a HwConfig, not {type(config).__name__}")
        self._config = cfg = config
        self._ctrl = Controller(config=cfg)
        self.host_bits = max(cfg.word_bits, cfg.param_word_bits, INSTR_BITS)
        super().__init__({
            "start": In(1),
            # The controller's status ports, passed through as the controller declares them.
            **{name: self._ctrl.signature.members[name] for name in PASSED_THROUGH},
            "host_mem": In(2),
            "host_addr": In(MAX_ADDR_BITS),
            "host_wdata": In(self.host_bits),
            "host_we": In(1),
            "host_rdata": Out(cfg.word_bits),
            "dma_in": In(stream.Signature(self._ctrl.dma_bits)),
            "dma_out": Out(stream.Signature(cfg.word_bits)),
        })

    @property
    def config(self) -> HwConfig:
        return self._config

    def elaborate(self, platform):
        cfg = self._config
        m = Module()
        m.submodules.ctrl = ctrl = self._ctrl
        m.submodules.act_mem = act = Memory(shape=cfg.word_bits, depth=cfg.act_depth, init=[])
        m.submodules.wt_mem = wt = Memory(shape=cfg.word_bits, depth=cfg.weight_depth, init=[])
        m.submodules.prm_mem = prm = Memory(shape=cfg.param_word_bits, depth=cfg.param_depth, init=[])
        m.submodules.imem = imem = Memory(shape=INSTR_BITS, depth=cfg.imem_depth, init=[])
        wiring.connect(m, wiring.flipped(self.dma_in), ctrl.dma_in)
        wiring.connect(m, ctrl.dma_out, wiring.flipped(self.dma_out))
        m.d.comb += [
            ctrl.start.eq(self.start),
            *(getattr(self, name).eq(getattr(ctrl, name)) for name in PASSED_THROUGH),
        ]
        host = ~ctrl.busy
        for mem, name, code in ((act, "act", Mem.ACT), (wt, "wt", Mem.WEIGHT), (prm, "prm", Mem.PARAM),
                                (imem, "imem", Mem.IMEM)):
            rp, wp = mem.read_port(), mem.write_port()
            host_write = host & self.host_we & (self.host_mem == code)
            m.d.comb += [
                rp.addr.eq(getattr(ctrl, f"{name}_raddr")),
                getattr(ctrl, f"{name}_rdata").eq(rp.data),
                wp.addr.eq(self.host_addr),
                wp.data.eq(self.host_wdata),
                wp.en.eq(host_write),
            ]
            if name != "imem":
                with m.If(~host_write):
                    m.d.comb += [wp.addr.eq(getattr(ctrl, f"{name}_waddr")), wp.data.eq(getattr(ctrl, f"{name}_wdata")),
                                 wp.en.eq(getattr(ctrl, f"{name}_we"))]
            if name == "act":
                with m.If(host):
                    m.d.comb += rp.addr.eq(self.host_addr)
                m.d.comb += self.host_rdata.eq(rp.data)
        return m
