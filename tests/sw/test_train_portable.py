"""The same seed gives the same artifact on another x86 CPU: two CPUs emulated on this one.

Each child process trains the tiny model under a different CPU dispatch (torch's
``ATEN_CPU_CAPABILITY`` default vs avx2, oneDNN's ISA cap, MKL's branch). With the default kernel
profile vitforge pins one code path, and every blob's SHA-256 agrees (at the default thread
count, which training uses on any machine); with the opt-out
(``VITFORGE_KERNELS=native``) the emulated CPUs round differently and the hashes differ.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from vitforge.sw.train import TrainConfig

#: Two CPUs, as the libraries would see them: one without AVX2 (generic kernels), one with.
CPU_WITHOUT_AVX2 = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE"}
CPU_WITH_AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


@pytest.mark.parametrize("profile", ["portable", "native"])
def test_emulated_cpus_give_identical_artifacts_only_when_pinned(tiny_children, tiny_train, blob_hashes, tmp_path,
                                                                profile):
    cpus = {"cpu_a": CPU_WITHOUT_AVX2, "cpu_b": CPU_WITH_AVX2}
    tc = replace(tiny_train, threads=TrainConfig().threads)
    results = tiny_children([(tmp_path / name, {**cpu, "VITFORGE_KERNELS": profile}, tc) for name, cpu in cpus.items()])
    for code, stdout, stderr in results:
        assert code == 0, stderr[-3000:]
        status = json.loads(stdout.strip().splitlines()[-1])
        assert status["profile"] == profile and status["pinned"], status
    a, b = (blob_hashes(tmp_path / name / "artifact") for name in cpus)
    assert a.keys() == b.keys() and len(a) > 10
    if profile == "portable":
        assert a == b
    else:
        # The opt-out: the float kernels differ, so do the trained weights and their int8 tensors.
        assert a != b
        assert any(a[k] != b[k] for k in a if k.startswith("tensors/"))
