"""Portable CPU kernels: what makes the same seed give the same trained weights (and int8 artifact) on
other x86 machines. Imported (and so pinned) by ``vitforge/__init__.py`` before anything computes.

Importing vitforge pins torch's CPU kernels so that the same seed gives the same trained weights
(and so the same int8 artifact) on other x86 machines: torch's own vectorized kernels
(``ATEN_CPU_CAPABILITY``), MKL (``MKL_CBWR``, conditional numerical reproducibility) and oneDNN
(``ONEDNN_MAX_CPU_ISA``) otherwise pick their code path from the CPU, and the paths round
differently. torch 2.13's CPU wheel uses MKL for BLAS and oneDNN for some element-wise ops
(GELU); each of the three settings is read from the environment when its library first runs a
kernel, not when torch is imported, so setting them here, before anything computes, takes effect
(``kernel_status`` reports what is in force; training refuses to run unpinned).

``VITFORGE_KERNELS`` chooses the profile:

* ``portable`` (default): the AVX2 paths of torch and oneDNN and MKL's AVX2 branch: one code path
  on every x86 CPU with AVX2 + FMA (Intel since 2013, AMD since 2015), about 1.2x the native
  training time on this AVX-512 machine. MKL honours its ISA branches on Intel CPUs only: on AMD
  it keeps its own dispatch (``mkl_branch`` 2, AUTO), which may round differently from Intel's
  AVX2 branch; ``strict`` removes that doubt. A CPU without AVX2 + FMA gets ``strict``.
* ``strict``: the generic paths (torch's ``default`` kernels, oneDNN up to SSE4.1, MKL's
  ``COMPATIBLE`` branch): one code path on every x86-64 CPU, Intel or AMD; about 2.2x the native
  training time.
* ``native``: leave the choice to the libraries (fastest; results differ between CPUs).
"""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable choosing the kernel profile (see the module docstring).
KERNELS_ENV = "VITFORGE_KERNELS"
KERNEL_PROFILES = ("portable", "strict", "native")

#: The environment each pinned profile sets: torch's ATen dispatch, MKL's branch, oneDNN's ISA cap.
#: ``STRICT`` makes MKL's results independent of the operands' memory alignment too.
PROFILE_ENV: dict[str, dict[str, str]] = {
    "portable": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                 "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "strict": {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE,STRICT", "ONEDNN_MAX_CPU_ISA": "SSE41"},
    "native": {},
}
#: What torch reports (``torch.backends.cpu.get_cpu_capability()``) under each pinned profile.
PROFILE_ATEN = {"portable": "AVX2", "strict": "DEFAULT"}
#: MKL's branch codes (mkl_service.h) each pinned profile accepts: ``MKL_CBWR_AVX2`` (10), or
#: ``MKL_CBWR_AUTO`` (2), what MKL reports on AMD CPUs, which ignore ISA branches;
#: ``MKL_CBWR_COMPATIBLE`` (3) on every x86 CPU.
PROFILE_MKL_BRANCH = {"portable": (10, 2), "strict": (3,)}
_MKL_CBWR_BRANCH = 1  # mkl_cbwr_get's argument for "the code path"
_CPU_FLAGS_NEEDED = ("avx2", "fma")


def _cpu_has_avx2(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU has AVX2 and FMA (read from /proc/cpuinfo; False where it cannot tell)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return all(f in flags for f in _CPU_FLAGS_NEEDED)
    return False


def requested_profile() -> str:
    """The profile ``VITFORGE_KERNELS`` asks for, after the CPU check (``portable`` needs AVX2 + FMA)."""
    name = os.environ.get(KERNELS_ENV, "portable").strip().lower() or "portable"
    if name not in KERNEL_PROFILES:
        raise ValueError(f"{KERNELS_ENV} must be one of {', '.join(KERNEL_PROFILES)}, not {name!r}")
    if name == "portable" and not _cpu_has_avx2():
        return "strict"
    return name


_PINNED_VARS = sorted({var for env in PROFILE_ENV.values() for var in env})
#: The user's own values of the variables a profile sets, as they were before vitforge's import.
_USER_ENV = {var: os.environ.get(var) for var in _PINNED_VARS}


def _pin_kernels() -> str:
    profile = requested_profile()
    for var, value in _USER_ENV.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value
    os.environ.update(PROFILE_ENV[profile])
    return profile


#: The profile pinned when vitforge was imported (or by :func:`set_kernel_profile`).
KERNEL_PROFILE = _pin_kernels()


def user_environ() -> dict[str, str]:
    """``os.environ`` without vitforge's pins (the user's own values restored): the environment to
    start another process with, which then pins for itself by its ``VITFORGE_KERNELS``."""
    env = {k: v for k, v in os.environ.items() if k not in _USER_ENV}
    env.update({k: v for k, v in _USER_ENV.items() if v is not None})
    return env


def set_kernel_profile(name: str) -> str:
    """Choose the kernel profile in this process (``vitforge train --kernels``); it takes effect
    only if torch has not run a kernel yet, which :func:`kernel_status` (and training) checks.

    Returns the profile in force (``portable`` falls back to ``strict`` without AVX2 + FMA).
    """
    global KERNEL_PROFILE
    if name not in KERNEL_PROFILES:
        raise ValueError(f"kernel profile must be one of {', '.join(KERNEL_PROFILES)}, not {name!r}")
    os.environ[KERNELS_ENV] = name
    KERNEL_PROFILE = _pin_kernels()
    return KERNEL_PROFILE


def _mkl_branch() -> int | None:
    """MKL's current code-path branch (``mkl_cbwr_get``), or None where torch has no MKL."""
    import ctypes

    import torch

    lib = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    try:
        get = ctypes.CDLL(str(lib)).mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return None
    get.restype = ctypes.c_int
    return int(get(ctypes.c_int(_MKL_CBWR_BRANCH)))


def kernel_status() -> dict:
    """The kernels in force: ``{"profile", "aten", "mkl_branch", "pinned"}``.

    ``pinned`` is False when the profile asks for pinned kernels but torch had already run a
    kernel before vitforge was imported (the choice is then made and cannot change in this
    process): import vitforge before computing anything with torch.
    """
    import torch

    aten = torch.backends.cpu.get_cpu_capability()
    branch = _mkl_branch()
    pinned = KERNEL_PROFILE == "native" or (
        aten == PROFILE_ATEN[KERNEL_PROFILE] and (branch is None or branch in PROFILE_MKL_BRANCH[KERNEL_PROFILE]))
    return {"profile": KERNEL_PROFILE, "aten": aten, "mkl_branch": branch, "pinned": pinned}
