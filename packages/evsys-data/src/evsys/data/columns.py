"""``columns``: build EvSys rows from a dataset's own columns.

``columns: {question: q, expected: a}`` turns the dataset row ``{"q": "2+2?", "a": "4", ...}`` into
the example ``{"inputs": {"question": "2+2?"}, "expected": "4"}``; for a benchmark it gives the task
``{"task_id": "row_1", "question": "2+2?", "verifier": {..., "expected": "4"}}``. Columns that are
not mapped are ignored. Problems found in a built row name the dataset column, not the EvSys field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evsys.schema.config import ROW_FIELDS
from evsys.schema.rows import VerifierSpec

__all__ = ["ColumnProblem", "column_of_field", "example_row", "task_row"]


class ColumnProblem(ValueError):
    """A mapped column is missing from a row (a jsonl row; datasets are checked once, up front) or empty."""

    def __init__(self, column: str, message: str) -> None:
        super().__init__(f"{column}: {message}")
        self.column = column
        self.message = message


#: fields that may be empty: the row simply has none
OPTIONAL_FIELDS = frozenset({"id", "metadata"})


def _value(raw: Mapping[str, Any], column: str, field: str) -> Any:
    if column not in raw:
        raise ColumnProblem(column, "no such column in this row")
    value = raw[column]
    if value is None and field not in OPTIONAL_FIELDS:
        raise ColumnProblem(column, "empty value (null)")
    return value


def example_row(raw: Mapping[str, Any], columns: Mapping[str, str]) -> dict[str, Any]:
    """The example row of ``raw``: ``expected``/``messages``/``id``/``metadata`` as mapped, other fields into ``inputs``."""
    row: dict[str, Any] = {}
    inputs: dict[str, Any] = {}
    for field, column in columns.items():
        value = _value(raw, column, field)
        if value is None:
            continue
        if field in ROW_FIELDS:
            row[field] = value
        else:
            inputs[field] = value
    if inputs:
        row["inputs"] = inputs
    return row


def task_row(raw: Mapping[str, Any], columns: Mapping[str, str] | None, verifier: VerifierSpec | None, number: int) -> dict[str, Any]:
    """The benchmark task of ``raw`` (row ``number``): mapped fields, ``expected`` into the benchmark's verifier.

    Without ``columns`` the row is taken as a task as it is, and gets the benchmark's verifier when it
    has none. A task without an ``id`` column is named ``row_<number>``.
    """
    if columns is None:
        row = dict(raw)
        if verifier is not None and row.get("verifier") is None:
            row["verifier"] = verifier.model_dump(exclude_defaults=True)
        if row.get("task_id") is None and row.get("id") is None:
            row["task_id"] = f"row_{number}"
        return row
    row = {}
    spec = verifier.model_dump(exclude_defaults=True) if verifier is not None else {}
    for field, column in columns.items():
        value = _value(raw, column, field)
        if value is None:
            continue
        if field == "expected":
            spec["expected"] = value
        elif field == "id":
            row["task_id"] = value
        else:
            row[field] = value
    row.setdefault("task_id", f"row_{number}")
    if spec:
        row["verifier"] = spec
    return row


def column_of_field(field: str | None, columns: Mapping[str, str] | None) -> str | None:
    """The dataset column behind a problem's EvSys field (``inputs.question`` -> ``q``); other fields unchanged."""
    if not field or not columns:
        return field
    parts = field.split(".")
    if parts[0] == "inputs" and len(parts) > 1 and parts[1] in columns:
        return ".".join([columns[parts[1]], *parts[2:]])
    if parts[0] == "verifier" and len(parts) > 1 and parts[1] == "expected" and "expected" in columns:
        return ".".join([columns["expected"], *parts[2:]])
    if parts[0] == "task_id" and "id" in columns:
        return ".".join([columns["id"], *parts[1:]])
    if parts[0] in columns:
        return ".".join([columns[parts[0]], *parts[1:]])
    return field
