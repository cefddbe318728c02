"""The controller's instruction set, described once.

:data:`FIELDS` lists, per opcode, the instruction's fields and their widths. From it come the
Python assembler (:func:`assemble`, :func:`encode`), the disassembler (:func:`disassemble`,
:func:`decode`), the Amaranth decode layout (:data:`INSTR_LAYOUT`, a
:class:`~amaranth.lib.data.StructLayout` with one union member per opcode) and the encoding table
at the end of this docstring. Nothing else states a field's position or width.

Conventions:

* An instruction is ``INSTR_BITS`` wide: the opcode in bits ``[0, OP_BITS)``, then the opcode's
  fields packed from bit ``OP_BITS`` upwards in the order listed (the first field lowest); unused
  high bits are 0. :func:`to_bytes` stores each instruction little-endian.
* Addresses and counts are in scratchpad *words* of ``lanes`` int8 elements (see
  :mod:`vitforge.hw.config`); strides are row strides in words; ``m``, ``k``, ``n``, ``rows``,
  ``cols``, ``n_tokens``, ``dim`` are element counts.
* Instructions execute in order, each one finishing before the next starts, except a ``LOAD``
  with ``nowait`` into the weight or parameter scratchpad: it is handed to the loader (which takes
  the ``LOAD`` words off the input stream and writes them through the memory's own write port)
  and the next instruction starts at once. The loader works on one ``LOAD`` and queues up to
  ``HwConfig.load_queue`` more, in program order; a ``nowait`` ``LOAD`` finding the queue full
  waits for room. ``SYNC`` waits until at most ``pending`` such LOADs are unfinished
  (``pending=0``: all); a ``LOAD`` without ``nowait`` (or into the activation scratchpad, which
  the datapath writes) first waits for every queued one, so the input stream stays in program
  order. The program must not read what an unfinished ``LOAD`` writes (the compiler puts a
  ``SYNC`` before). ``END`` (opcode 0, so an erased memory ends a program) waits for the loader,
  then stops the controller and raises ``done``.

Semantics (``A[i, j]`` is element ``j`` of row ``i`` of the matrix at ``a_addr`` with stride
``a_stride``):

* ``GEMM``: ``dst[m, n] = requantize(sum_k A[m, k] * B[k, n] + bias[n], mult[n], shift[n])`` for
  ``m < M, n < N`` with ``bias/mult/shift`` from the parameter scratchpad at ``param_addr``
  (``lanes`` channels a word). ``B`` comes from the weight scratchpad, or from the activation
  scratchpad if ``b_act``; if ``b_trans``, ``B[k, n]`` is read as element ``k`` of row ``n``
  (``Q K^T``). Bit-exact with :func:`vitforge.quant.ops.gemm`. If ``mean``, the parameter
  scratchpad is not read: every channel uses ``bias = 0``, ``mult = floor(2**MEAN_RECIP_BITS / k)``
  and ``shift = MEAN_RECIP_BITS`` with ``k`` the reduction length after :data:`TOKENS` is resolved;
  against a vector of ones this is :func:`vitforge.quant.selector.token_mean` over ``k`` rows
  (the mean over a dynamic token count). If ``gelu`` (only on a ``HwConfig.fuse_gelu`` build),
  every requantized element then goes through :func:`vitforge.quant.nonlinear.int_gelu` (its int8
  code read as ``numerics.gelu_in``) before it is written: ``GEMM`` + ``GELU`` in one pass.
* ``ADD``: ``count`` words, lane-wise :func:`vitforge.quant.ops.residual_add`.
* ``LOAD``/``STORE``: ``count`` words between the DMA streams and scratchpad ``mem``
  (:class:`Mem`); ``LOAD.nowait``: see above.
* ``SOFTMAX``/``GELU``/``LAYERNORM``/``SIGMOID``: row-wise over ``rows`` rows of ``cols``
  elements; ``param_addr`` points at the unit's parameters (LayerNorm's gamma/beta/requant).
* ``SELECT``: the token selector's control step: keep/prune from the scores at ``scores_addr``,
  gather the kept token rows and the package token to ``dst_addr``; the number of rows written
  becomes the controller's token count.
* Dynamic sizes: a size field (``m``, ``k``, ``n``, ``rows``, ``cols``, ``n_tokens``) holding
  :data:`TOKENS` means the token count of the last ``SELECT``; an ``ADD``/``LOAD``/``STORE``
  ``count`` with bit :data:`PER_TOKEN` set means ``count & (PER_TOKEN - 1)`` words per token.
  Per-instruction data layouts of the units: :mod:`vitforge.hw.controller`.

"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from amaranth.lib import data

from vitforge.quant.fixed import REQUANT_MAX_SHIFT, REQUANT_MULT_BITS

#: Width of an address or word-count field: the largest memory depth is ``2**MAX_ADDR_BITS`` words.
MAX_ADDR_BITS = 20
#: Width of a size field (tokens, features): matrix dimensions are below ``2**MAX_DIM_BITS``.
MAX_DIM_BITS = 12
#: Width of a requantization shift field (holds 0..REQUANT_MAX_SHIFT).
SHIFT_BITS = REQUANT_MAX_SHIFT.bit_length()
#: Width of the opcode field.
OP_BITS = 4
#: Width of ``SYNC.pending``: the loader's queue holds at most ``2**LOAD_QUEUE_BITS - 1`` LOADs.
LOAD_QUEUE_BITS = 4
#: Width of one instruction.
INSTR_BITS = 192
#: Bytes per instruction in :func:`to_bytes`.
INSTR_BYTES = INSTR_BITS // 8
#: A size field holding this value means "the token count of the last SELECT".
TOKENS = (1 << MAX_DIM_BITS) - 1
#: A word count with this bit set counts words per token (times the token count).
PER_TOKEN = 1 << (MAX_ADDR_BITS - 1)


class Op(enum.IntEnum):
    """Opcodes."""

    END = 0
    SYNC = 1
    LOAD = 2
    STORE = 3
    GEMM = 4
    ADD = 5
    SOFTMAX = 6
    GELU = 7
    LAYERNORM = 8
    SIGMOID = 9
    SELECT = 10


class Mem(enum.IntEnum):
    """The accelerator's memories: the scratchpads a LOAD/STORE addresses, and the instruction memory
    (``IMEM``: written by the host port only; no instruction addresses it)."""

    ACT = 0
    WEIGHT = 1
    PARAM = 2
    IMEM = 3


_A, _D = MAX_ADDR_BITS, MAX_DIM_BITS
_ROWWISE = (("src_addr", _A), ("src_stride", _D), ("dst_addr", _A), ("dst_stride", _D),
            ("rows", _D), ("cols", _D), ("param_addr", _A))

#: The instruction set: per opcode, its fields (name, width in bits) from low to high bits.
FIELDS: Mapping[Op, tuple[tuple[str, int], ...]] = {
    Op.END: (),
    Op.SYNC: (("pending", LOAD_QUEUE_BITS),),
    Op.LOAD: (("mem", 2), ("addr", _A), ("count", _A), ("nowait", 1)),
    Op.STORE: (("mem", 2), ("addr", _A), ("count", _A)),
    Op.GEMM: (("a_addr", _A), ("a_stride", _D), ("b_addr", _A), ("b_stride", _D), ("dst_addr", _A),
              ("dst_stride", _D), ("param_addr", _A), ("m", _D), ("k", _D), ("n", _D),
              ("b_act", 1), ("b_trans", 1), ("mean", 1), ("gelu", 1)),
    Op.ADD: (("a_addr", _A), ("b_addr", _A), ("dst_addr", _A), ("count", _A),
             ("mult_a", REQUANT_MULT_BITS), ("mult_b", REQUANT_MULT_BITS), ("shift", SHIFT_BITS)),
    Op.SOFTMAX: _ROWWISE,
    Op.GELU: _ROWWISE,
    Op.LAYERNORM: _ROWWISE,
    Op.SIGMOID: _ROWWISE,
    Op.SELECT: (("scores_addr", _A), ("tokens_addr", _A), ("tokens_stride", _D), ("dst_addr", _A),
                ("n_tokens", _D), ("dim", _D), ("param_addr", _A)),
}

for _op, _fields in FIELDS.items():
    assert OP_BITS + sum(w for _, w in _fields) <= INSTR_BITS, f"{_op.name} does not fit {INSTR_BITS} bits"

#: Width of the opcode-specific part of an instruction.
ARGS_BITS = INSTR_BITS - OP_BITS

#: Fields only a build with the named :class:`~vitforge.hw.config.HwConfig` flag decodes: the others
#: leave them out of their decode layout (:func:`instr_layout`), so their RTL does not change.
OPTIONAL_FIELDS: Mapping[tuple[Op, str], str] = {(Op.GEMM, "gelu"): "fuse_gelu"}


def op_layout(op: Op, config=None) -> data.StructLayout:
    """The decode layout of ``op``'s fields; with ``config`` (a ``HwConfig``), less the
    :data:`OPTIONAL_FIELDS` whose flag it has off (they are ``op``'s last fields, so the others keep
    their bits)."""
    fields = dict(FIELDS[op])
    if config is not None:
        for (field_op, name), flag in OPTIONAL_FIELDS.items():
            if field_op == op and not getattr(config, flag):
                del fields[name]
    return data.StructLayout(fields)


def instr_layout(config=None) -> data.StructLayout:
    """Amaranth decode layout of one instruction word (``INSTR_BITS`` wide): ``op`` and ``args``, a
    union with one struct per opcode named in lower case (``view.args.gemm.m``); ``config`` as in
    :func:`op_layout`."""
    return data.StructLayout({
        "op": OP_BITS,
        "args": data.UnionLayout({
            **{op.name.lower(): op_layout(op, config) for op, fields in FIELDS.items() if fields},
            "raw": ARGS_BITS,
        }),
    })


#: :func:`instr_layout` with every field.
INSTR_LAYOUT = instr_layout()
assert INSTR_LAYOUT.size == INSTR_BITS


@dataclass(frozen=True, init=False)
class Instr:
    """One instruction: an opcode and its field values (missing fields are 0).

    ``Instr(Op.GEMM, a_addr=0, m=65, ...)``; fields read as attributes (``instr.m``). Unknown
    fields and values outside a field's width raise ``ValueError``.
    """

    op: Op
    args: tuple[tuple[str, int], ...]

    def __init__(self, op: Op | str | int, **args: int) -> None:
        op = _to_op(op)
        widths = dict(FIELDS[op])
        unknown = sorted(set(args) - set(widths))
        if unknown:
            raise ValueError(
                f"{op.name} has no field(s) {', '.join(unknown)}; its fields are: {', '.join(widths) or 'none'}"
            )
        values = []
        for name, width in FIELDS[op]:
            value = args.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << width:
                raise ValueError(f"{op.name}.{name} must be an integer in 0..{(1 << width) - 1}, not {value!r}")
            values.append((name, int(value)))
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "args", tuple(values))

    def __getattr__(self, name: str) -> int:
        for field_name, value in object.__getattribute__(self, "args"):
            if field_name == name:
                return value
        raise AttributeError(f"{self.op.name} instruction has no field {name!r}")

    def __str__(self) -> str:
        return " ".join([self.op.name] + [f"{name}={value}" for name, value in self.args])


def _to_op(op: Op | str | int) -> Op:
    if isinstance(op, str):
        try:
            return Op[op.upper()]
        except KeyError:
            raise ValueError(f"unknown opcode {op!r}; valid: {', '.join(o.name for o in Op)}") from None
    try:
        return Op(op)
    except ValueError:
        raise ValueError(f"unknown opcode {op!r}; valid: {', '.join(f'{o.name}={o.value}' for o in Op)}") from None


def encode(instr: Instr) -> int:
    """One instruction as an ``INSTR_BITS``-bit integer."""
    word, offset = int(instr.op), OP_BITS
    for (_, width), (_, value) in zip(FIELDS[instr.op], instr.args, strict=True):
        word |= value << offset
        offset += width
    return word


def decode(word: int) -> Instr:
    """The instruction encoded in ``word``; raises ``ValueError`` for unknown opcodes or set unused bits."""
    if isinstance(word, bool) or not isinstance(word, int) or not 0 <= word < 1 << INSTR_BITS:
        raise ValueError(f"an instruction word must be an integer in 0..2**{INSTR_BITS}-1, not {word!r}")
    op = _to_op(word & ((1 << OP_BITS) - 1))
    args, offset = {}, OP_BITS
    for name, width in FIELDS[op]:
        args[name] = (word >> offset) & ((1 << width) - 1)
        offset += width
    if word >> offset:
        raise ValueError(f"{op.name} instruction word {word:#x} has bits set above its fields (bit {offset} up)")
    return Instr(op, **args)


def assemble(program: Iterable[Instr]) -> list[int]:
    """Encode a program: one ``INSTR_BITS``-bit integer per instruction."""
    return [encode(instr) for instr in program]


def to_bytes(words: Sequence[int]) -> bytes:
    """Instruction words as bytes, ``INSTR_BYTES`` each, little-endian."""
    return b"".join(w.to_bytes(INSTR_BYTES, "little") for w in words)


def disassemble(program: Sequence[int] | bytes) -> list[Instr]:
    """Decode a program given as instruction words or as :func:`to_bytes` output."""
    if isinstance(program, (bytes, bytearray)):
        if len(program) % INSTR_BYTES:
            raise ValueError(f"a program in bytes must be a multiple of {INSTR_BYTES} long, not {len(program)}")
        program = [int.from_bytes(program[i:i + INSTR_BYTES], "little") for i in range(0, len(program), INSTR_BYTES)]
    return [decode(w) for w in program]


def encoding_table() -> str:
    """The encoding as a text table (appended to this module's docstring)."""
    lines = [f"Encoding ({INSTR_BITS}-bit words, opcode in bits [0, {OP_BITS})):", ""]
    lines.append(f"    {'opcode':<12} {'field':<14} {'bits':>9}")
    for op, fields in FIELDS.items():
        lines.append(f"    {op.name + '=' + str(op.value):<12} {'op':<14} {f'[0:{OP_BITS}]':>9}")
        offset = OP_BITS
        for name, width in fields:
            lines.append(f"    {'':<12} {name:<14} {f'[{offset}:{offset + width}]':>9}")
            offset += width
    return "\n".join(lines) + "\n"


__doc__ += encoding_table()
