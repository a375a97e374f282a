"""JSONL metrics: one JSON object per line, flushed at once so a crashed run keeps its history."""

from __future__ import annotations

import json
import os
from pathlib import Path


class JsonlLog:
    """Writes dicts as JSON lines to `path`, replacing an older file, or with `append` after its lines (its
    directory is created).

    Use as a context manager, or call close().
    """

    def __init__(self, path: str | os.PathLike, append: bool = False):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a" if append else "w", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "JsonlLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
