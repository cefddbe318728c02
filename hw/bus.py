"""The accelerator's port signatures, stated once: scratchpad read and write ports, AXI4-Lite and AXI4.

Each is an ``amaranth.lib.wiring.Signature`` from the initiator's side (the controller for a
scratchpad, the master for AXI); a target takes it ``.flip()``-ped. :func:`flat` lays a signature's
members out as flat ports named ``<prefix>_<member>``: the names Vivado's interface inference and
cocotbext-axi's ``from_prefix`` expect (``s_axil_awaddr``, ``m_axi_rdata``), and the names the blocks
have always had (``act_raddr``). Nested signature members would come out of Amaranth's Verilog backend
as ``s_axil__awaddr``.
"""

from __future__ import annotations

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

#: AXI4-Lite data width (the register file's registers).
AXIL_DATA_BITS = 32
#: AXI4 burst length field, size field, burst type field and response widths.
AXI_LEN_BITS, AXI_SIZE_BITS, AXI_BURST_BITS, AXI_RESP_BITS = 8, 3, 2, 2


def scratchpad_read(addr_bits: int, shape) -> wiring.Signature:
    """A synchronous read port (data one cycle after the address), from the reader's side."""
    return wiring.Signature({"raddr": Out(addr_bits), "rdata": In(shape)})


def scratchpad_write(addr_bits: int, shape) -> wiring.Signature:
    """A write port (one word per cycle while ``we``), from the writer's side."""
    return wiring.Signature({"waddr": Out(addr_bits), "wdata": Out(shape), "we": Out(1)})


def axi4_lite(addr_bits: int) -> wiring.Signature:
    """AXI4-Lite with ``addr_bits`` byte addresses and 32-bit data, from the master's side (no ``prot``)."""
    d = AXIL_DATA_BITS
    return wiring.Signature({
        "awaddr": Out(addr_bits), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(d), "wstrb": Out(d // 8), "wvalid": Out(1), "wready": In(1),
        "bresp": In(AXI_RESP_BITS), "bvalid": In(1), "bready": Out(1),
        "araddr": Out(addr_bits), "arvalid": Out(1), "arready": In(1),
        "rdata": In(d), "rresp": In(AXI_RESP_BITS), "rvalid": In(1), "rready": Out(1),
    })


def axi4(addr_bits: int, data_bits: int, id_bits: int = 1) -> wiring.Signature:
    """AXI4 (bursts) with ``addr_bits`` byte addresses, ``data_bits`` data and ``id_bits`` IDs, from the
    master's side (no ``lock``/``cache``/``prot``/``qos``: the interconnect's defaults)."""
    return wiring.Signature({
        "awid": Out(id_bits), "awaddr": Out(addr_bits), "awlen": Out(AXI_LEN_BITS), "awsize": Out(AXI_SIZE_BITS),
        "awburst": Out(AXI_BURST_BITS), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_bits), "wstrb": Out(data_bits // 8), "wlast": Out(1), "wvalid": Out(1),
        "wready": In(1),
        "bid": In(id_bits), "bresp": In(AXI_RESP_BITS), "bvalid": In(1), "bready": Out(1),
        "arid": Out(id_bits), "araddr": Out(addr_bits), "arlen": Out(AXI_LEN_BITS), "arsize": Out(AXI_SIZE_BITS),
        "arburst": Out(AXI_BURST_BITS), "arvalid": Out(1), "arready": In(1),
        "rid": In(id_bits), "rdata": In(data_bits), "rresp": In(AXI_RESP_BITS), "rlast": In(1),
        "rvalid": In(1), "rready": Out(1),
    })


def flat(prefix: str, signature: wiring.Signature | wiring.FlippedSignature) -> dict:
    """``signature``'s members as flat ports ``<prefix>_<name>`` (for a component's signature dict)."""
    return {f"{prefix}_{name}": member for name, member in signature.members.items()}


__all__ = ["AXIL_DATA_BITS", "axi4", "axi4_lite", "flat", "scratchpad_read", "scratchpad_write"]
