"""The artifact directory: writing it atomically with a hash for every blob, reading blobs back with
every check, and its program section.

One module owns the format's mechanics; :mod:`.export` decides what goes in (the model's integer
tensors and the manifest), :mod:`.program` compiles the program that :func:`write_program` stores, and
the runtime reads it back with :func:`read_program`. The layout is documented in :mod:`.export`.

* :class:`Writer` puts blobs under a directory and records ``{sha256, bytes, ...}`` for each;
  :func:`write_directory` builds an artifact in a temporary directory and renames it into place, so
  an interrupted export leaves no half-written artifact.
* :func:`read_blob` / :func:`read_tensor` check a blob's listing, size and SHA-256 and name the file
  that fails (:class:`ArtifactError`).
* :func:`words_to_files` is the ``.bin`` / ``.hex`` encoding of memory words.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vitforge.hw import compiler as hwp
from vitforge.hw import isa
from vitforge.hw.config import HwConfig
from vitforge.hw.isa import INSTR_BYTES, Mem

#: The manifest's file name.
MANIFEST = "manifest.json"
#: Canonical dtypes of the integer tensors (numpy, little-endian).
DTYPES = {"w": "<i1", "b": "<i4", "mult": "<u2", "shift": "u1", "gamma": "<i1", "beta": "<i4",
          "cls": "<i1", "pos": "<i1"}


class ArtifactError(ValueError):
    """An artifact that cannot be used; the message names the offending file."""


def sha256(data: bytes) -> str:
    """The hex SHA-256 of ``data`` (what the manifest records for every blob)."""
    return hashlib.sha256(data).hexdigest()


def words_to_files(words: list[int], word_bits: int) -> tuple[bytes, bytes]:
    """Memory words as ``.bin`` (each little-endian in ``ceil(word_bits/8)`` bytes) and ``.hex`` (one word a
    line for ``$readmemh``, ``ceil(word_bits/4)`` digits) contents."""
    nbytes = -(-word_bits // 8)
    digits = -(-word_bits // 4)
    raw = b"".join(w.to_bytes(nbytes, "little") for w in words)
    hexd = "".join(f"{w:0{digits}x}\n" for w in words).encode()
    return raw, hexd


class Writer:
    """Puts blobs below ``root`` and records each one's hash, size and metadata in :attr:`blobs`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs: dict[str, dict] = {}

    def put(self, rel: str, data: bytes, **meta) -> str:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.blobs[rel] = {"sha256": sha256(data), "bytes": len(data), **meta}
        return rel

    def tensor(self, rel: str, t: torch.Tensor, kind: str) -> str:
        """An integer tensor in its canonical dtype (:data:`DTYPES`); refuses values that do not fit."""
        arr = np.ascontiguousarray(t.to(torch.int64).numpy().astype(DTYPES[kind]))
        if not np.array_equal(arr.astype(np.int64), t.to(torch.int64).numpy()):
            raise ValueError(f"{rel}: values do not fit {DTYPES[kind]}")
        return self.put(rel, arr.tobytes(), dtype=DTYPES[kind], shape=list(arr.shape))


def write_directory(out_dir: str | Path, fill: Callable[[Writer], dict]) -> Path:
    """Build an artifact at ``out_dir``: ``fill(writer)`` writes the blobs and returns the manifest (without
    its ``blobs`` table, which is added); written in a temporary directory beside ``out_dir`` and renamed
    into place (replacing an existing one), so nothing is ever half-written."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        w = Writer(tmp)
        manifest = fill(w)
        manifest["blobs"] = w.blobs
        (tmp / MANIFEST).write_text(json.dumps(manifest, sort_keys=True, indent=1) + "\n")
        os.chmod(tmp, 0o755)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old / "a")
            os.replace(tmp, out_dir)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def read_manifest(root: Path, fmt: str, version: int) -> dict:
    """The parsed manifest of the artifact at ``root``; it must be format ``fmt`` version ``version``."""
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise ArtifactError(f"{mpath}: missing (not an artifact directory?)")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{mpath}: not valid JSON ({err})") from None
    if manifest.get("format") != fmt or manifest.get("version") != version:
        raise ArtifactError(f"{mpath}: not a {fmt} v{version} manifest")
    return manifest


def read_blob(root: Path, rel: str, blobs: dict) -> bytes:
    """Blob ``rel`` of the artifact at ``root``, checked against ``blobs`` (the manifest's table): listed,
    present, of the recorded size and SHA-256."""
    path = root / rel
    if rel not in blobs:
        raise ArtifactError(f"{path}: not listed in {MANIFEST}'s blob table")
    if not path.is_file():
        raise ArtifactError(f"{path}: missing")
    data = path.read_bytes()
    meta = blobs[rel]
    if len(data) != meta["bytes"]:
        raise ArtifactError(f"{path}: size {len(data)} bytes, the manifest says {meta['bytes']} (truncated?)")
    if sha256(data) != meta["sha256"]:
        raise ArtifactError(f"{path}: SHA-256 mismatch (the file was modified or corrupted)")
    return data


def read_tensor(root: Path, rel: str, blobs: dict) -> torch.Tensor:
    """An integer tensor blob (written by :meth:`Writer.tensor`) as int64, checked like :func:`read_blob`."""
    data = read_blob(root, rel, blobs)
    meta = blobs[rel]
    arr = np.frombuffer(data, dtype=np.dtype(meta["dtype"])).astype(np.int64)
    if arr.size != int(np.prod(meta["shape"])):
        raise ArtifactError(f"{root / rel}: {arr.size} elements, the manifest's shape is {meta['shape']}")
    return torch.from_numpy(arr.reshape(meta["shape"]).copy())


# --- the program section ------------------------------------------------------------------------------


def write_program(prog: hwp.Program, hw: HwConfig, writer: Writer) -> dict:
    """Write a compiled program through ``writer`` (``program.bin|hex``, ``program/<blob>.bin|hex``,
    ``program/loads.json``); returns the manifest's ``program`` section."""
    words = isa.assemble(prog.instrs)
    digits = isa.INSTR_BITS // 4
    hexd = "".join(f"{w:0{digits}x}\n" for w in words).encode()
    mems = {ld.blob: ld.mem for ld in prog.loads}
    images = {}
    for name in sorted(prog.blobs):
        bits = hw.param_word_bits if mems[name] == Mem.PARAM else hw.word_bits
        raw, hx = words_to_files(prog.blobs[name], bits)
        n = len(prog.blobs[name])
        images[name] = [writer.put(f"program/{name}.bin", raw, words=n, word_bits=bits),
                        writer.put(f"program/{name}.hex", hx, words=n, word_bits=bits)]
    table = {
        "input": {"blob": hwp.INPUT_BLOB, "shape": list(prog.input_shape), "word_bits": hw.word_bits},
        "output": {"rows": prog.output_rows, "cols": prog.output_cols, "word_bits": hw.word_bits},
        "loads": prog.load_table(),
        "layers": prog.layers,
    }
    return {
        "bin": writer.put("program.bin", isa.to_bytes(words), words=len(words), word_bits=isa.INSTR_BITS),
        "hex": writer.put("program.hex", hexd, words=len(words), word_bits=isa.INSTR_BITS),
        "loads": writer.put("program/loads.json", (json.dumps(table, sort_keys=True, indent=1) + "\n").encode()),
        "images": images,
        "instructions": len(words),
        "fits_imem": len(words) <= hw.imem_depth,
    }


def read_program(root: Path, manifest: dict) -> tuple[list[int], hwp.Program]:
    """The program section of the artifact at ``root``: the instruction words and the
    :class:`~vitforge.hw.compiler.Program` (memory images, LOAD table, layers, shapes), every blob checked."""
    prog = manifest.get("program")
    if not prog:
        raise ArtifactError(f"{root}: the artifact has no program")
    blobs = manifest["blobs"]
    raw = read_blob(root, prog["bin"], blobs)
    if len(raw) % INSTR_BYTES:
        raise ArtifactError(f"{root / prog['bin']}: {len(raw)} bytes is not a whole number of instructions")
    words = [int.from_bytes(raw[i:i + INSTR_BYTES], "little") for i in range(0, len(raw), INSTR_BYTES)]
    table = json.loads(read_blob(root, prog["loads"], blobs))
    images = {}
    for name, (rel, _hex) in prog["images"].items():
        nbytes = -(-blobs[rel]["word_bits"] // 8)
        data = read_blob(root, rel, blobs)
        images[name] = [int.from_bytes(data[i:i + nbytes], "little") for i in range(0, len(data), nbytes)]
    loads = [hwp.Load(ld["blob"], ld["offset"], ld["count"], Mem[ld["mem"].upper()], ld["addr"])
             for ld in table["loads"]]
    layers = table.get("layers") or []
    if len(layers) != len(words):
        raise ArtifactError(f"{root / prog['loads']}: {len(layers)} layer names for {len(words)} instructions")
    program = hwp.Program([isa.decode(w) for w in words], images, loads, tuple(table["input"]["shape"]),
                          table["output"]["rows"], table["output"]["cols"], layers)
    return words, program


__all__ = ["DTYPES", "MANIFEST", "ArtifactError", "Writer", "read_blob", "read_manifest", "read_program",
           "read_tensor", "sha256", "words_to_files", "write_directory", "write_program"]
