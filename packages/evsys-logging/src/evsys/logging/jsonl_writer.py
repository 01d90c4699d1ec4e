"""Append-only JSONL files that survive crashes, and setting aside rows a resumed run replaces.

- :class:`JsonlWriter` writes one whole line per row and flushes it (optionally fsyncs). A write
  that fails (disk full, file too large) is rolled back to the previous end of the file, so the
  file never ends in half a row, and the error names the file.
- :func:`set_aside_tail` moves what follows a byte offset to ``<file>.orphaned-<timestamp>``: a
  resumed run keeps each step exactly once, and nothing written is ever deleted.
- :func:`write_text_atomic` replaces a file so a reader sees the old or the new one, never half.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from evsys.schema.jsonutil import finite_json_value

ORPHANED_SUFFIX = ".orphaned-"


class JsonlWriter:
    """Appends one JSON object per line; NaN and infinities become null so every line stays valid JSON.

    ``redact`` (e.g. :meth:`evsys.logging.redact.Redactor.value`) is applied to every row first.
    """

    def __init__(self, path: Path, *, fsync: bool = False, redact: Callable[[Any], Any] | None = None) -> None:
        self.path = path
        self._fsync = fsync
        self._redact = redact
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: IO[bytes] | None = None
        self._open()

    def _open(self) -> IO[bytes]:
        if self._handle is None:
            self._handle = self.path.open("ab")
        return self._handle

    def write(self, row: dict[str, Any]) -> None:
        """Write and flush one row; on failure the file is cut back to where it was, and OSError names it."""
        value = finite_json_value(row)
        if self._redact is not None:
            value = self._redact(value)
        data = (json.dumps(value, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
        handle = self._open()
        start = handle.tell()
        try:
            handle.write(data)
            handle.flush()
            if self._fsync:
                os.fsync(handle.fileno())
        except OSError as exc:
            self._roll_back(start)
            raise OSError(exc.errno, exc.strerror or str(exc), str(self.path)) from None

    def _roll_back(self, size: int) -> None:
        """Drop a partly written row (truncating never needs free space)."""
        handle, self._handle = self._handle, None
        if handle is not None:
            with contextlib.suppress(OSError, ValueError):
                handle.close()
        with contextlib.suppress(OSError):
            os.truncate(self.path, size)

    def size(self) -> int:
        """Bytes written so far (every row is flushed, so this is the file's size)."""
        if self._handle is not None:
            return self._handle.tell()
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def sync(self) -> None:
        """fsync the file (rows are already flushed to the OS)."""
        if self._handle is not None:
            os.fsync(self._handle.fileno())

    def close(self) -> None:
        """Close the file (a later write reopens it)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def timestamp() -> str:
    """A UTC timestamp for file names: ``20260101T120000Z``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def set_aside_tail(path: Path, keep_bytes: int, stamp: str) -> Path | None:
    """Move everything after the first ``keep_bytes`` bytes of ``path`` to ``<path>.orphaned-<stamp>``.

    The tail is written (and fsynced) to the new file before ``path`` is cut, so a crash in
    between duplicates rows rather than losing them. Returns the new file, or None when there
    was nothing past ``keep_bytes``.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    if size <= keep_bytes:
        return None
    with path.open("rb") as handle:
        handle.seek(keep_bytes)
        tail = handle.read()
    target = path.with_name(f"{path.name}{ORPHANED_SUFFIX}{stamp}")
    with target.open("ab") as out:
        out.write(tail)
        out.flush()
        os.fsync(out.fileno())
    os.truncate(path, keep_bytes)
    return target


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so a reader sees the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with temporary.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
