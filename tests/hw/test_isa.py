"""hw/isa.py: encode/decode round trips, the Amaranth layout agrees with the Python encoder."""

from __future__ import annotations

import pytest
from amaranth.hdl import Const
from amaranth.lib import data
from hypothesis import given, settings
from hypothesis import strategies as st

from vitforge.hw import isa
from vitforge.hw.isa import FIELDS, INSTR_BITS, INSTR_BYTES, INSTR_LAYOUT, Instr, Op


@st.composite
def instructions(draw):
    op = draw(st.sampled_from(list(Op)))
    args = {name: draw(st.integers(0, (1 << width) - 1)) for name, width in FIELDS[op]}
    return Instr(op, **args)


@settings(max_examples=300, derandomize=True)
@given(st.lists(instructions(), max_size=8))
def test_round_trip(program):
    words = isa.assemble(program)
    assert all(0 <= w < 1 << INSTR_BITS for w in words)
    assert isa.disassemble(words) == program
    raw = isa.to_bytes(words)
    assert len(raw) == INSTR_BYTES * len(program)
    assert isa.disassemble(raw) == program


@settings(max_examples=100, derandomize=True)
@given(instructions())
def test_amaranth_layout_matches_encoder(instr):
    """The decode layout reads every field where the Python encoder put it."""
    view = data.Const(INSTR_LAYOUT, isa.encode(instr))
    assert view.op == instr.op
    if FIELDS[instr.op]:
        args = getattr(view.args, instr.op.name.lower())
        for name, value in instr.args:
            assert getattr(args, name) == value, name


def test_field_positions_are_packed_in_order():
    instr = Instr(Op.GEMM, a_addr=1, m=3, b_trans=1)
    word = isa.encode(instr)
    assert word & 0xF == Op.GEMM
    assert (word >> 4) & 1 == 1  # a_addr is the first field
    offsets, offset = {}, 4
    for name, width in FIELDS[Op.GEMM]:
        offsets[name] = offset
        offset += width
    assert (word >> offsets["m"]) & 0xFFF == 3
    assert word >> offsets["b_trans"] == 1
    assert Const(word, INSTR_BITS).shape().width == INSTR_BITS


def test_end_is_zero_and_fields_default_to_zero():
    assert isa.encode(Instr("end")) == 0
    assert Instr(Op.ADD, count=4).a_addr == 0


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Instr(Op.GEMM, m=1 << 12), r"GEMM.m must be an integer in 0..4095, not 4096"),
        (lambda: Instr(Op.ADD, shift=-1), r"ADD.shift must be an integer in 0..63, not -1"),
        (lambda: Instr(Op.GEMM, q=1), r"GEMM has no field\(s\) q; its fields are: a_addr"),
        (lambda: Instr("frobnicate"), r"unknown opcode 'frobnicate'; valid: END"),
        (lambda: Instr(15), r"unknown opcode 15"),
        (lambda: isa.decode(15), r"unknown opcode 15"),
        (lambda: isa.decode(1 << INSTR_BITS), r"instruction word must be an integer"),
        (lambda: isa.decode(Op.SYNC | 1 << 100), r"SYNC instruction word .* has bits set above its fields"),
        (lambda: isa.disassemble(b"\0" * 5), rf"multiple of {INSTR_BYTES} long, not 5"),
    ],
)
def test_bad_instructions_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="SYNC instruction has no field 'm'"):
        _ = Instr(Op.SYNC).m


def test_docstring_has_the_generated_table():
    assert isa.encoding_table() in isa.__doc__
    for op in Op:
        assert f"{op.name}={op.value}" in isa.__doc__
    assert str(Instr(Op.ADD, count=2)).startswith("ADD a_addr=0 b_addr=0 dst_addr=0 count=2")
