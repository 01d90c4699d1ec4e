"""Load and check training examples: source -> transform -> row model, every problem with file:line."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from evsys.data.jsonl import JsonlLine
from evsys.data.templates import template_fields
from evsys.data.transforms import load_transform
from evsys.schema.errors import DataError, Location, Problem
from evsys.schema.plugins import default_registry
from evsys.schema.registry import PluginRegistry
from evsys.schema.validation import pydantic_problems

MAX_REPORTED = 50

#: template source text -> placeholder names allowed beyond the row's ``inputs``
TemplateChecks = Mapping[str, frozenset[str]]


def _located(problems: Iterable[Problem], path: str, line: int) -> list[Problem]:
    return [dataclasses.replace(p, location=Location(path, line)) for p in problems]


def _validate_row(row: Any, row_models: tuple[type[BaseModel], ...], path: str, line: int) -> tuple[BaseModel | None, list[Problem]]:
    if not isinstance(row, dict):
        return None, [Problem(f"a row must be a JSON object, got {type(row).__name__}", Location(path, line))]
    best: list[Problem] | None = None
    for model in row_models:
        try:
            return model.model_validate(row), []
        except ValidationError as exc:
            problems = _located(pydantic_problems(exc, model, None), path, line)
            if best is None or len(problems) < len(best):
                best = problems
    return None, best or []


def _check_templates(example: BaseModel, templates: TemplateChecks, path: str, line: int) -> list[Problem]:
    inputs = getattr(example, "inputs", None)
    if not isinstance(inputs, dict):
        return []
    problems = []
    for template, extra in templates.items():
        missing = template_fields(template) - set(inputs) - set(extra)
        if missing:
            names = ", ".join("{" + m + "}" for m in sorted(missing))
            problems.append(Problem(f"template placeholder {names} is not a key of inputs (keys: {', '.join(sorted(inputs)) or 'none'})", Location(path, line), "inputs"))
    return problems


def _source_lines(path: str | Path, source_kind: str, registry: PluginRegistry) -> Iterator[JsonlLine]:
    reader: Callable[[str | Path], Iterator[JsonlLine]] = registry.get("source", source_kind).load()
    return reader(path)


def iter_examples(
    path: str | Path,
    row_models: tuple[type[BaseModel], ...],
    *,
    source_kind: str = "jsonl",
    transform: str | None = None,
    templates: TemplateChecks | None = None,
    registry: PluginRegistry | None = None,
) -> Iterator[tuple[int, BaseModel | None, list[Problem]]]:
    """Yield ``(line, example, problems)`` for every row; ``example`` is None when the row is invalid."""
    registry = registry or default_registry()
    name = str(path)
    transform_fn = load_transform(registry.get("transform", transform)) if transform else None
    for item in _source_lines(path, source_kind, registry):
        if item.error is not None:
            yield item.line, None, [Problem(item.error, Location(name, item.line))]
            continue
        row = item.row
        if transform_fn is not None:
            try:
                row = transform_fn(row)
            except Exception as exc:  # a user transform's failure is reported per line
                yield item.line, None, [Problem(f"transform '{transform}' failed: {type(exc).__name__}: {exc}", Location(name, item.line))]
                continue
            if row is None:
                continue
        example, problems = _validate_row(row, row_models, name, item.line)
        if example is not None and templates:
            problems = _check_templates(example, templates, name, item.line)
            if problems:
                example = None
        yield item.line, example, problems


def _collect(
    path: str | Path,
    row_models: tuple[type[BaseModel], ...],
    options: dict[str, Any],
    max_reported: int,
    keep: bool,
) -> tuple[list[BaseModel], int, list[Problem]]:
    """Valid examples (kept only if ``keep``), their count, and at most ``max_reported`` problems."""
    examples: list[BaseModel] = []
    valid = 0
    problems: list[Problem] = []
    hidden = 0
    for _, example, row_problems in iter_examples(path, row_models, **options):
        if example is not None:
            valid += 1
            if keep:
                examples.append(example)
            continue
        for problem in row_problems:
            if len(problems) < max_reported:
                problems.append(problem)
            else:
                hidden += 1
    if hidden:
        problems.append(Problem(f"... and {hidden} more problem(s)", Location(str(path))))
    if not valid and not problems:
        problems.append(Problem("no examples: the file is empty", Location(str(path))))
    return examples, valid, problems


def check_examples_file(
    path: str | Path,
    row_models: tuple[type[BaseModel], ...],
    *,
    source_kind: str = "jsonl",
    transform: str | None = None,
    templates: TemplateChecks | None = None,
    registry: PluginRegistry | None = None,
    max_reported: int = MAX_REPORTED,
) -> tuple[int, list[Problem]]:
    """Check every row; returns ``(valid row count, problems)`` with at most ``max_reported`` problems listed."""
    options = {"source_kind": source_kind, "transform": transform, "templates": templates, "registry": registry}
    _, valid, problems = _collect(path, row_models, options, max_reported, keep=False)
    return valid, problems


def load_examples(
    path: str | Path,
    row_models: tuple[type[BaseModel], ...],
    *,
    source_kind: str = "jsonl",
    transform: str | None = None,
    templates: TemplateChecks | None = None,
    registry: PluginRegistry | None = None,
) -> list[BaseModel]:
    """Every example of the file; any bad row raises :class:`DataError` listing all problems."""
    options = {"source_kind": source_kind, "transform": transform, "templates": templates, "registry": registry}
    examples, _, problems = _collect(path, row_models, options, MAX_REPORTED, keep=True)
    if problems:
        raise DataError(problems)
    return examples
