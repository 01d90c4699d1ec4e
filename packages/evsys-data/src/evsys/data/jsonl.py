"""The ``jsonl`` source: one JSON object per line, each kept with its line number."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evsys.schema.errors import DataError, Location, Problem, unreadable_file

#: file suffixes the ``hf`` source reads and the ``jsonl`` source does not
DATASET_SUFFIXES = frozenset({".csv", ".tsv", ".parquet", ".arrow"})


@dataclass(frozen=True)
class JsonlLine:
    """One non-blank line: its 1-based number and either the parsed ``row`` or an ``error``."""

    line: int
    row: Any = None
    error: str | None = None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def read_jsonl(path: str | Path) -> Iterator[JsonlLine]:
    """Yield every non-blank line of ``path``; a file that cannot be opened raises :class:`DataError`.

    A line that is not valid UTF-8 or not valid JSON, or that holds NaN/Infinity, yields an
    ``error`` instead of a row, so callers can report every bad line at once.
    """
    name = str(path)
    suffix = Path(path).suffix.lower()
    if suffix in DATASET_SUFFIXES and Path(path).is_file():
        raise DataError(Problem(f"a {suffix} file is not JSON lines; read it with data.source_kind: hf", Location(name)))
    try:
        handle = Path(path).open("rb")  # noqa: SIM115 - closed by the with-block below
    except OSError as exc:
        raise DataError(unreadable_file(exc, name, "is a directory, expected a .jsonl file")) from None
    decoder = json.JSONDecoder(parse_constant=_reject_constant)
    with handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield JsonlLine(number, error=f"not valid UTF-8 (byte {exc.start})")
                continue
            if not text.strip():
                continue
            try:
                row = decoder.decode(text.strip())
            except json.JSONDecodeError as exc:
                yield JsonlLine(number, error=f"invalid JSON: {exc.msg} (column {exc.colno})")
                continue
            except ValueError as exc:
                yield JsonlLine(number, error=str(exc))
                continue
            yield JsonlLine(number, row=row)
