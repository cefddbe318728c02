"""A run killed during the dense stage resumes from its checkpoint and writes the same artifact."""

from __future__ import annotations

import json

import pytest

from vitforge.sw.workflow import resume_dir


def test_killed_during_dense_resumes_to_the_identical_artifact(tiny_run, tiny_children, tiny_train, blob_hashes,
                                                              tmp_path):
    out = tmp_path / "killed"
    # The child kills itself (SIGKILL) as it reports the dense check at step 4, before saving it:
    # the checkpoint on disk is step 2's, and steps 3-4 are lost and redone.
    [(code, _, stderr)] = tiny_children([(out, {}, tiny_train, "dense step 4/")])
    assert code == -9, stderr[-2000:]
    saved = json.loads((out / "state" / "dense.json").read_text())
    assert saved["loop"]["step"] == 2 and not saved["result"]["finished"]
    assert not (out / "artifact").exists()

    lines = []
    report = resume_dir(out, log=lines.append)
    assert "dense: resumed at step 2" in " ".join(lines)
    assert blob_hashes(out / "artifact") == blob_hashes(tiny_run[0] / "artifact")
    assert report["stages"] == tiny_run[1]["stages"]


def test_resume_refuses_a_directory_without_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved run to resume"):
        resume_dir(tmp_path)
