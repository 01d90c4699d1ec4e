"""An append-only JSONL file whose every row is flushed (optionally fsynced) as it is written."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any

from evsys.schema.jsonutil import finite_json_value


class JsonlWriter:
    """Appends one JSON object per line; NaN and infinities become null so every line stays valid JSON."""

    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        self.path = path
        self._fsync = fsync
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: IO[str] | None = path.open("a", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        """Write and flush one row."""
        if self._handle is None:
            self._handle = self.path.open("a", encoding="utf-8")
        self._handle.write(json.dumps(finite_json_value(row), ensure_ascii=False, allow_nan=False) + "\n")
        self._handle.flush()
        if self._fsync:
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        """Close the file (a later write reopens it)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so a reader sees the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)
