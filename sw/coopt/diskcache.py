"""A JSON file of ``key -> value`` that built-in problems keep their expensive results in across runs."""

from __future__ import annotations

import json
import os
from pathlib import Path


class JsonCache:
    """``key -> float`` entries in one JSON file, or nothing at all when ``path`` is ``None``.

    Every :meth:`store` rewrites the file through a temporary file and a rename, so a killed run never
    leaves it half-written; the temporary name carries the process id, so Ray workers sharing the file
    never write the same temporary. Picklable (it holds only the path).
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def load(self) -> dict:
        """Every entry (empty without a path or a file)."""
        if self.path is None or not self.path.exists():
            return {}
        return json.loads(self.path.read_text())

    def get(self, key: str) -> float | None:
        """The value stored under ``key``, or ``None``."""
        return self.load().get(key)

    def store(self, key: str, value: float) -> None:
        """Add or replace ``key`` (a no-op without a path)."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        entries = {**self.load(), key: value}
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries, sort_keys=True))
        os.replace(tmp, self.path)


__all__ = ["JsonCache"]
