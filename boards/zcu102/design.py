"""What the ZCU102 block design is made of, derived from :class:`~vitforge.hw.config.HwConfig`.

Everything here is computed from the config and from :mod:`vitforge.hw.axi` (the register map,
the port list of :class:`~vitforge.hw.axi.AxiTop`), never restated:

* :func:`ports`: ``axi_top``'s ports with their directions and widths, read from its generated
  Verilog (what Vivado will see).
* :func:`interfaces`: the bus interfaces Vivado must infer on them (AXI4-Lite slave ``s_axil``,
  AXI4 master ``m_axi``, the clock, the active-high reset and the level interrupt), with the
  parameters the block design checks.
* :func:`wrapper_verilog`: the thin Verilog wrapper whose ports carry the ``X_INTERFACE_INFO``
  / ``X_INTERFACE_PARAMETER`` attributes, around the generated ``axi_top``.
* :func:`address_map`: where the register window and the memory master sit in the PS's map.
* :func:`c_header`: the register map and buffer layout for C drivers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vitforge.hw import axi
from vitforge.hw.config import HwConfig
from vitforge.hw.isa import INSTR_BITS

#: Top module of the generated accelerator Verilog (as ``vitforge rtl generate`` names it).
CORE = "axi_top"
#: The wrapper module the block design instantiates as a module reference.
WRAPPER = "vitforge_accel"
#: Block-design cell names.
ACCEL_CELL, PS_CELL, RESET_CELL, LITE_IC_CELL = "accel", "zynq_ps", "rst_pl", "lite_ic"
#: Port-name prefix of each bus interface (hw/axi.py's naming), and its interface name.
LITE_PREFIX, MASTER_PREFIX = "s_axil_", "m_axi_"
LITE_INTF, MASTER_INTF = "s_axil", "m_axi"
#: Amaranth's clock and reset ports of the ``sync`` domain (reset active high).
CLOCK_PORT, RESET_PORT, IRQ_PORT = "clk", "rst", "irq"
#: Where the PS's M_AXI_HPM0_FPD window starts (the ZynqMP's PL address space, as FINN assigns).
REG_BASE = 0xA000_0000


@dataclass(frozen=True)
class Port:
    """One port of ``axi_top``: ``name``, ``direction`` (``"input"`` / ``"output"``), ``width`` in bits."""

    name: str
    direction: str
    width: int

    def __post_init__(self) -> None:
        if self.direction not in ("input", "output"):
            raise ValueError(f"direction must be 'input' or 'output', not {self.direction!r}")
        if self.width < 1:
            raise ValueError(f"width must be positive, not {self.width}")


#: A port declaration in Amaranth's Verilog: ``input [12:0] s_axil_awaddr;`` or ``output irq;``.
_PORT_DECL = re.compile(r"^\s*(input|output)\s+(?:\[(\d+):0\]\s+)?(\w+);", re.M)


def ports(core_verilog: str) -> list[Port]:
    """The ports of the module :data:`CORE` in ``core_verilog`` (the generated accelerator):
    clock and reset first, then the AXI4-Lite slave, the AXI4 master and the rest, each by name."""
    m = re.search(rf"^module {CORE}\(.*?^endmodule", core_verilog, re.M | re.S)
    if m is None:
        raise ValueError(f"no module {CORE} in the accelerator's Verilog")
    found = [Port(name, direction, int(msb) + 1 if msb else 1)
             for direction, msb, name in _PORT_DECL.findall(m.group(0))]

    def order(p: Port) -> tuple[int, str]:
        rank = {CLOCK_PORT: 0, RESET_PORT: 1}.get(p.name, 2 if p.name.startswith(LITE_PREFIX) else
                                                  3 if p.name.startswith(MASTER_PREFIX) else 4)
        return rank, p.name

    return sorted(found, key=order)


def port_widths(core_verilog: str) -> dict[str, int]:
    """``{port name: width}`` of :func:`ports`."""
    return {p.name: p.width for p in ports(core_verilog)}


@dataclass(frozen=True)
class Interface:
    """A bus interface of the wrapper: ``name``, the VLNV of its type, its ports by logical name
    (upper case, as Vivado's interface definitions name them) and its parameters."""

    name: str
    vlnv: str
    ports: dict[str, str]
    parameters: dict[str, str]


def _bus(core_verilog: str, prefix: str) -> dict[str, str]:
    """``{LOGICAL: port}`` of every port that starts with ``prefix``."""
    return {p.name[len(prefix):].upper(): p.name for p in ports(core_verilog) if p.name.startswith(prefix)}


def clock_hz(cfg: HwConfig) -> int:
    """The PL clock in Hz (``cfg.clock_mhz``)."""
    return round(cfg.clock_mhz * 1_000_000)


def interfaces(cfg: HwConfig, core_verilog: str) -> list[Interface]:
    """The wrapper's interfaces: the two AXI buses, the clock, the reset and the interrupt.

    No ``FREQ_HZ``: the block design propagates the PS clock's actual frequency (a fixed value
    here would fail ``validate_bd_design`` when the PLL's frequency differs in the last digits).
    """
    widths = port_widths(core_verilog)
    return [
        Interface(LITE_INTF, "xilinx.com:interface:aximm:1.0", _bus(core_verilog, LITE_PREFIX), {
            "PROTOCOL": "AXI4LITE", "DATA_WIDTH": str(widths[LITE_PREFIX + "wdata"]),
            "ADDR_WIDTH": str(widths[LITE_PREFIX + "awaddr"])}),
        Interface(MASTER_INTF, "xilinx.com:interface:aximm:1.0", _bus(core_verilog, MASTER_PREFIX), {
            "PROTOCOL": "AXI4", "DATA_WIDTH": str(widths[MASTER_PREFIX + "wdata"]),
            "ADDR_WIDTH": str(widths[MASTER_PREFIX + "awaddr"]), "ID_WIDTH": str(widths[MASTER_PREFIX + "awid"]),
            "MAX_BURST_LENGTH": str(cfg.axi_burst), "NUM_READ_OUTSTANDING": str(cfg.axi_max_inflight // cfg.axi_burst),
            "NUM_WRITE_OUTSTANDING": "1"}),
        Interface(CLOCK_PORT, "xilinx.com:signal:clock:1.0", {"CLK": CLOCK_PORT}, {
            "ASSOCIATED_BUSIF": f"{LITE_INTF}:{MASTER_INTF}", "ASSOCIATED_RESET": RESET_PORT}),
        Interface(RESET_PORT, "xilinx.com:signal:reset:1.0", {"RST": RESET_PORT}, {"POLARITY": "ACTIVE_HIGH"}),
        Interface(IRQ_PORT, "xilinx.com:signal:interrupt:1.0", {"INTERRUPT": IRQ_PORT},
                  {"SENSITIVITY": "LEVEL_HIGH"}),
    ]


def wrapper_verilog(cfg: HwConfig, preset: str, core_verilog: str) -> str:
    """The wrapper module :data:`WRAPPER`: the ports of ``axi_top`` (``core_verilog``), one to one, with
    Vivado's interface attributes (the first port of each interface also carries its ``X_INTERFACE_PARAMETER``)."""
    by_port: dict[str, tuple[Interface, str]] = {}
    for intf in interfaces(cfg, core_verilog):
        for logical, port in intf.ports.items():
            by_port[port] = (intf, logical)
    first = {next(iter(intf.ports.values())) for intf in interfaces(cfg, core_verilog)}
    lines = [f"// Generated by vitforge (boards/zcu102/design.py) from HwConfig preset {preset!r} "
             f"(config {axi.config_id(cfg):#010x}): do not edit.",
             f"// The block design's module reference: {CORE} (the accelerator) with the attributes from which",
             "// Vivado infers its AXI4-Lite slave, AXI4 master, clock, active-high reset and level interrupt.",
             f"module {WRAPPER} ("]
    decls = []
    for p in ports(core_verilog):
        attrs = []
        if p.name in by_port:
            intf, logical = by_port[p.name]
            attrs.append(f'(* X_INTERFACE_INFO = "{intf.vlnv} {intf.name} {logical}" *)')
            if p.name in first:
                params = ", ".join(f"{k} {v}" for k, v in intf.parameters.items())
                attrs.append(f'(* X_INTERFACE_PARAMETER = "{params}" *)')
        width = f"[{p.width - 1}:0] " if p.width > 1 else ""
        decls.append("".join(f"    {a}\n" for a in attrs) + f"    {p.direction} wire {width}{p.name}")
    lines.append(",\n".join(decls))
    lines.append(");")
    conns = ",\n".join(f"        .{p.name}({p.name})" for p in ports(core_verilog))
    lines += [f"    {CORE} core (", conns, "    );", "endmodule", ""]
    return "\n".join(lines)


@dataclass(frozen=True)
class AddressMap:
    """Where things sit in the PS's address map.

    Attributes:
        reg_base: byte address of the register window (behind M_AXI_HPM0_FPD).
        reg_range: its size in bytes: ``2 ** REG_ADDR_BITS``, which covers the registers and the
            profile (``PROFILE_BASE + 4 * imem_depth``).
        master_segments: the PS's memory segments the accelerator's master reaches (DDR).
    """

    reg_base: int
    reg_range: int
    master_segments: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.reg_base % self.reg_range:
            raise ValueError(f"reg_base {self.reg_base:#x} must be aligned to its range {self.reg_range:#x}")


#: S_AXI_HP0_FPD's DDR segments (below and above 4 GiB).
HP0_DDR_SEGMENTS = ("HP0_DDR_LOW", "HP0_DDR_HIGH")


def profile_end(cfg: HwConfig) -> int:
    """One past the last byte of the profile window: ``PROFILE_BASE + 4 * imem_depth``."""
    return axi.PROFILE_BASE + 4 * cfg.imem_depth


def address_map(cfg: HwConfig) -> AddressMap:
    """The register window (it must cover the profile of every instruction) and the DDR segments."""
    reg_range = 1 << axi.reg_addr_bits(cfg)
    if profile_end(cfg) > reg_range:
        raise ValueError(f"the profile of {cfg.imem_depth} instructions ends at {profile_end(cfg):#x}, beyond the "
                         f"{reg_range:#x}-byte register window (address width {axi.reg_addr_bits(cfg)} bits)")
    return AddressMap(REG_BASE, reg_range, HP0_DDR_SEGMENTS)


# --- the C header ---------------------------------------------------------------------------------


def _define(name: str, value: int, comment: str = "", *, hex_: bool = False) -> str:
    """``#define NAME VALUEu``: addresses and bit masks in hex (``hex_``), counts in decimal."""
    tail = f"  /* {comment} */" if comment else ""
    text = f"{value:#x}" if hex_ else str(value)
    return f"#define {name:<28} {text}u{tail}"


def c_header(cfg: HwConfig, preset: str) -> str:
    """``vitforge_accel.h``: the register map (:class:`~vitforge.hw.axi.Reg`), the ``STATUS`` bits
    (:class:`~vitforge.hw.axi.Status`), the profile window, the base address in the block design and
    the buffer layout (alignment, beat packing of instructions, words and parameter words)."""
    amap = address_map(cfg)
    bus_bytes = cfg.bus_bits // 8
    lines = [f"/* Generated by vitforge (boards/zcu102/design.py) from HwConfig preset {preset!r} "
             f"(config {axi.config_id(cfg):#010x}): do not edit. */",
             "/* Register map and buffer layout of the vitforge accelerator (hw/axi.py). */",
             "#ifndef VITFORGE_ACCEL_H", "#define VITFORGE_ACCEL_H", "", "#include <stdint.h>", "",
             "/* Identity: ID reads VF_MAGIC; CONFIG reads VF_CONFIG_ID (the HwConfig fingerprint). */",
             _define("VF_MAGIC", axi.MAGIC, hex_=True), _define("VF_CONFIG_ID", axi.config_id(cfg), hex_=True), "",
             "/* Register window in the PS's address map (M_AXI_HPM0_FPD), 32-bit registers. */",
             _define("VF_REG_BASE", amap.reg_base, hex_=True), _define("VF_REG_RANGE", amap.reg_range, hex_=True), ""]
    lines += [_define(f"VF_REG_{r.name}", int(r), hex_=True) for r in axi.Reg]
    lines += ["", "/* STATUS bits. */"]
    lines += [_define(f"VF_STATUS_{s.name}", int(s), hex_=True) for s in axi.Status]
    lines += ["", "/* Profile: the cycle at which instruction i was dispatched is at VF_PROFILE_BASE + 4 * i. */",
              _define("VF_PROFILE_BASE", axi.PROFILE_BASE, hex_=True),
              _define("VF_PROFILE_ENTRIES", cfg.imem_depth), "",
              "/* Buffers: program, input stream and output, each VF_BUFFER_ALIGN-aligned; words are little",
              " * endian and zero-padded to whole beats of VF_BUS_BYTES bytes. */",
              _define("VF_BUFFER_ALIGN", cfg.axi_align, hex_=True), _define("VF_BUS_BITS", cfg.bus_bits),
              _define("VF_BUS_BYTES", bus_bytes), _define("VF_ADDR_BITS", cfg.axi_addr_bits),
              _define("VF_INSTR_BITS", INSTR_BITS), _define("VF_INSTR_BEATS", cfg.beats(INSTR_BITS)),
              _define("VF_WORD_BITS", cfg.word_bits, "weight / activation words, and STORE words"),
              _define("VF_WORD_BEATS", cfg.beats(cfg.word_bits)),
              _define("VF_PARAM_WORD_BITS", cfg.param_word_bits, "bias / multiplier / shift words"),
              _define("VF_PARAM_WORD_BEATS", cfg.beats(cfg.param_word_bits)),
              _define("VF_LANES", cfg.lanes, "int8 lanes per word"),
              _define("VF_CLOCK_HZ", clock_hz(cfg)), "",
              "/* Bytes of n program instructions, n words, n parameter words in their buffers. */",
              "#define VF_INSTR_BYTES(n)            ((uint64_t)(n) * VF_INSTR_BEATS * VF_BUS_BYTES)",
              "#define VF_WORD_BYTES(n)             ((uint64_t)(n) * VF_WORD_BEATS * VF_BUS_BYTES)",
              "#define VF_PARAM_WORD_BYTES(n)       ((uint64_t)(n) * VF_PARAM_WORD_BEATS * VF_BUS_BYTES)",
              "", "#endif /* VITFORGE_ACCEL_H */", ""]
    return "\n".join(lines)


__all__ = ["ACCEL_CELL", "CORE", "HP0_DDR_SEGMENTS", "LITE_INTF", "MASTER_INTF", "PS_CELL", "REG_BASE", "WRAPPER",
           "AddressMap", "Interface", "Port", "address_map", "c_header", "clock_hz", "interfaces", "port_widths",
           "ports", "profile_end", "wrapper_verilog"]
