"""Benchmark tasks from a dataset: ``metadata.benchmark[].data`` plus ``columns`` plus one ``verifier``.

Each row becomes a :class:`~evsys.schema.rows.TaskRow` (see :func:`evsys.data.columns.task_row`), so
GSM8K-shaped data is scored without writing ``tasks.jsonl``::

    metadata:
      benchmark:
        - name: gsm8k
          data: {source_kind: hf, path: openai/gsm8k, subset: main, split: test,
                 columns: {question: question, expected: answer}}
          verifier: {fn_name: numeric_match, options: {extract: last_number}}
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from evsys.data.columns import task_row
from evsys.data.examples import MAX_REPORTED, iter_examples, source_options
from evsys.schema.errors import DataError, Location, Problem
from evsys.schema.plugins import default_registry
from evsys.schema.registry import PluginRegistry
from evsys.schema.rows import TaskRow

__all__ = ["iter_dataset_tasks", "load_dataset_tasks"]


def iter_dataset_tasks(
    spec: Any, registry: PluginRegistry | None = None, *, offline: bool = False
) -> Iterator[tuple[Location, TaskRow | None, list[Problem]]]:
    """``(location, task, problems)`` for every row of a benchmark's ``data`` (a :class:`~evsys.schema.config.BenchmarkSpec`);
    ``offline``: never download."""
    data = spec.data
    columns = dict(data.columns) if data.columns is not None else None
    verifier = spec.verifier

    def build(raw: dict[str, Any], number: int) -> dict[str, Any]:
        return task_row(raw, columns, verifier, number)

    for location, task, problems in iter_examples(
        data.path, (TaskRow,), registry=registry or default_registry(), options=source_options(data, offline=offline), build_row=build
    ):
        yield location, task, problems if isinstance(problems, list) else []  # type: ignore[misc]


def load_dataset_tasks(spec: Any, registry: PluginRegistry | None = None) -> list[TaskRow]:
    """Every task of a benchmark's ``data``; bad rows (up to 50) and duplicate ids raise one :class:`DataError`."""
    tasks: list[TaskRow] = []
    problems: list[Problem] = []
    first: dict[str, Location] = {}
    label = spec.data.path
    for location, task, row_problems in iter_dataset_tasks(spec, registry):
        label = location.path
        problems.extend(row_problems)
        if task is None:
            continue
        if task.resolved_id in first:
            problems.append(Problem(f"duplicate task_id '{task.resolved_id}' (first at {first[task.resolved_id]})", location, "task_id"))
            continue
        first[task.resolved_id] = location
        tasks.append(task)  # type: ignore[arg-type]
    if problems:
        hidden = len(problems) - MAX_REPORTED
        raise DataError([*problems[:MAX_REPORTED], *([Problem(f"... and {hidden} more problem(s)", Location(label))] if hidden > 0 else [])])
    if not tasks:
        raise DataError(Problem("has no tasks", Location(label)))
    return tasks
