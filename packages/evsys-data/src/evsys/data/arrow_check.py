"""Whole Arrow batches proven valid without building a Python object per row.

``evsys validate --deep`` over a million-row dataset spends most of its time turning rows into
dicts and validating them one at a time. When ``columns`` maps a dataset to prompt rows, the Arrow
types and null counts already prove most batches valid: an ``inputs`` value may be anything but
null, ``expected`` must be text (or a list of texts), ``id`` text. A batch that passes
:func:`prompt_batch_is_valid` is counted as it is; any other batch is checked row by row, so
the reported problems are exactly those of the row-by-row check.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evsys.schema.config import ROW_FIELDS
from evsys.schema.rows import PromptExample

__all__ = ["prompt_batch_check"]


def _is_text(pa: Any, data_type: Any) -> bool:
    return bool(pa.types.is_string(data_type) or pa.types.is_large_string(data_type) or pa.types.is_string_view(data_type))


def _is_text_list(pa: Any, column: Any) -> bool:
    data_type = column.type
    if not (pa.types.is_list(data_type) or pa.types.is_large_list(data_type)):
        return False
    if not _is_text(pa, data_type.value_type):
        return False
    return all(chunk.flatten().null_count == 0 for chunk in column.chunks)


def prompt_batch_check(columns: Mapping[str, str] | None, row_models: tuple[type[Any], ...], transform: str | None, templates: Mapping[str, frozenset[str]] | None) -> Any:
    """A function ``table -> bool`` that is True when every row of the Arrow ``table`` (holding the
    mapped columns) becomes a valid :class:`PromptExample` whose templates are satisfied; None
    when the mapping cannot be checked by column (no ``columns``, a transform, chat fields, ...)."""
    if columns is None or transform is not None or PromptExample not in row_models:
        return None
    inputs = [field for field in columns if field not in ROW_FIELDS]
    if not inputs or "expected" not in columns or "messages" in columns or "metadata" in columns:
        return None
    for template, extra in (templates or {}).items():
        from evsys.data.templates import template_fields

        if template_fields(template) - set(inputs) - set(extra):
            return None  # every row fails: the row-by-row check reports them
    import pyarrow as pa

    expected, row_id = columns["expected"], columns.get("id")

    def check(table: Any) -> bool:
        if any(table.column(name).null_count for name in set(columns.values())):
            return False
        column = table.column(expected)
        if not (_is_text(pa, column.type) or _is_text_list(pa, column)):
            return False
        return row_id is None or _is_text(pa, table.column(row_id).type)

    return check
