"""The scoreboard every test and bench uses: exact equality of integer sequences or tensors, and on a
mismatch the first differing element with its index (the Amaranth-simulator tests and the cocotb
benches alike; equality is exact, never a tolerance).

* :func:`first_mismatch` — ``(index, got, expected)`` of the first difference, or ``None``.
* :func:`assert_equal` — raises ``AssertionError`` naming it (with coordinates for a shaped tensor).
* :func:`describe_mismatch` — the same as a message (``None`` if equal), lengths compared too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def _as_list(x: Any) -> list[int]:
    """Flatten a tensor or (nested) sequence of integers, row-major."""
    return [int(v) for v in torch.as_tensor(x, dtype=torch.int64).flatten().tolist()]


def first_mismatch(got: Any, expected: Any) -> tuple[int, int, int] | None:
    """``(index, got, expected)`` of the first differing element (flattened, row-major), or None.

    Both are flattened row-major; different lengths raise ``ValueError`` naming both.
    """
    g, e = _as_list(got), _as_list(expected)
    if len(g) != len(e):
        raise ValueError(f"scoreboard lengths differ: got {len(g)} values, expected {len(e)}")
    for i, (a, b) in enumerate(zip(g, e, strict=True)):
        if a != b:
            return i, a, b
    return None


def assert_equal(got: Any, expected: Any, what: str, shape: Sequence[int] | None = None) -> None:
    """Scoreboard check: exact equality; on mismatch raise ``AssertionError`` with the first bad index.

    Args:
        got, expected: integer tensors or sequences (compared flattened, row-major).
        what: what is compared, for the message.
        shape: if given (or if ``expected`` is a tensor), the index is also shown per dimension.
    """
    bad = first_mismatch(got, expected)
    if bad is None:
        return
    index, g, e = bad
    if shape is None and isinstance(expected, torch.Tensor):
        shape = tuple(expected.shape)
    where = f"[{index}]"
    if shape:
        coords, rest = [], index
        for dim in reversed(shape):
            coords.append(rest % dim)
            rest //= dim
        where += f" (index {tuple(reversed(coords))})"
    total = len(_as_list(expected))
    n_bad = sum(a != b for a, b in zip(_as_list(got), _as_list(expected), strict=True))
    raise AssertionError(
        f"{what}: first mismatch at element {where}: got {g}, expected {e} ({n_bad} of {total} differ)"
    )


def describe_mismatch(got: Sequence[int], want: Sequence[int], what: str = "output") -> str | None:
    """``None`` if equal, else a message naming the first differing index and both values."""
    got, want = list(got), list(want)
    for k, (g, w) in enumerate(zip(got, want, strict=False)):
        if g != w:
            return f"{what}[{k}]: got {g}, expected {w} (of {len(want)} elements)"
    if len(got) != len(want):
        return f"{what}: got {len(got)} elements, expected {len(want)}"
    return None


__all__ = ["assert_equal", "describe_mismatch", "first_mismatch"]
