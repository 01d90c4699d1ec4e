"""Load and check training examples: source -> transform -> row model, every problem with file:line."""

from __future__ import annotations

import dataclasses
import gc
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from evsys.data.arrow_check import prompt_batch_check
from evsys.data.columns import ColumnProblem, column_of_field, example_row
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


RowBuilder = Callable[[dict[str, Any], int], dict[str, Any]]


@dataclass(frozen=True)
class SourceOptions:
    """Where rows come from and how they become EvSys rows (the keys of a config's ``data``)."""

    source_kind: str = "jsonl"
    split: str | None = None
    subset: str | None = None
    columns: Mapping[str, str] | None = None
    transform: str | None = None
    #: never download (passed to readers that take an ``offline`` keyword)
    offline: bool = False


def _located(problems: Iterable[Problem], location: Location, columns: Mapping[str, str] | None) -> list[Problem]:
    return [dataclasses.replace(p, location=location, field=column_of_field(p.field, columns)) for p in problems]


def _validate_row(
    row: Any, row_models: tuple[type[BaseModel], ...], location: Location, columns: Mapping[str, str] | None
) -> tuple[BaseModel | None, list[Problem]]:
    if not isinstance(row, dict):
        return None, [Problem(f"a row must be a JSON object, got {type(row).__name__}", location)]
    best: list[Problem] | None = None
    for model in row_models:
        try:
            return model.model_validate(row), []
        except ValidationError as exc:
            problems = _located(pydantic_problems(exc, model, None), location, columns)
            if best is None or len(problems) < len(best):
                best = problems
    return None, best or []


def _other_shape(row: Any, other_shapes: Mapping[type[BaseModel], tuple[str, ...]]) -> type[BaseModel] | None:
    """The row model of another algorithm that ``row`` is a valid row of, if any."""
    if not isinstance(row, dict):
        return None
    for model in other_shapes:
        try:
            model.model_validate(row)
        except ValidationError:
            continue
        return model
    return None


def _check_templates(example: BaseModel, templates: TemplateChecks, location: Location) -> list[Problem]:
    """Placeholders a row cannot fill: a prompt row's ``inputs`` keys plus each template's extra names;
    for a chat prompt (no ``inputs``), only the templates with extra names apply (a teacher template
    rewrites the last user turn; user templates render ``inputs``, which a chat row has none of)."""
    inputs = getattr(example, "inputs", None)
    if not isinstance(inputs, dict):
        if getattr(example, "messages", None) is None or not hasattr(example, "expected"):
            return []
        chat_problems = []
        for template, extra in templates.items():
            missing = template_fields(template) - set(extra) if extra else frozenset()
            if missing:
                names = ", ".join("{" + m + "}" for m in sorted(missing))
                chat_problems.append(Problem(f"template placeholder {names} needs inputs, which a chat row has none of (it may use {', '.join('{' + e + '}' for e in sorted(extra))})", location, "messages"))
        return chat_problems
    problems = []
    for template, extra in templates.items():
        missing = template_fields(template) - set(inputs) - set(extra)
        if missing:
            names = ", ".join("{" + m + "}" for m in sorted(missing))
            problems.append(Problem(f"template placeholder {names} is not a key of inputs (keys: {', '.join(sorted(inputs)) or 'none'})", location, "inputs"))
    return problems


def open_source(path: str | Path, options: SourceOptions, registry: PluginRegistry) -> Iterable[JsonlLine]:
    """The raw rows of ``path`` from the registered reader of ``options.source_kind``.

    A reader takes the path (plus ``split``/``subset`` keywords when the config sets them) and returns
    an iterable of :class:`JsonlLine`; it may carry ``label`` and ``unit`` naming its rows' location
    (``data.parquet[train]`` and ``row``), and ``select_columns(columns)``, which checks once that
    the mapped columns exist and reads only those (without a transform, which sees whole raw rows).
    """
    reader: Callable[..., Iterable[JsonlLine]] = registry.get("source", options.source_kind).load()
    extra: dict[str, Any] = {k: v for k, v in (("split", options.split), ("subset", options.subset)) if v is not None}
    if options.offline and _takes_keyword(reader, "offline"):
        extra["offline"] = True
    rows = reader(path, **extra)
    select = getattr(rows, "select_columns", None)
    if options.columns is not None and options.transform is None and callable(select):
        rows = select(list(options.columns.values()))
    return rows


def _takes_keyword(function: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def other_algorithm_shapes(registry: PluginRegistry, algorithm: str) -> dict[type[BaseModel], tuple[str, ...]]:
    """Row models other algorithms take and ``algorithm`` does not, each with those algorithms' names."""
    own = set(registry.get("algorithm", algorithm).meta.get("row_models") or ())
    shapes: dict[type[BaseModel], list[str]] = {}
    for registration in registry.registrations("algorithm"):
        for model in registration.meta.get("row_models") or ():
            if model not in own:
                shapes.setdefault(model, []).append(registration.name)
    return {model: tuple(names) for model, names in shapes.items()}


def _numbered_rows(rows: Iterable[JsonlLine], batch_check: Callable[[Any], bool] | None) -> Iterator[JsonlLine | tuple[int, int]]:
    """The source's rows; with ``batch_check`` and a batched source, ``(last row number, count)`` for each batch it proves valid."""
    batches = getattr(rows, "batches", None)
    if batch_check is None or not callable(batches):
        yield from rows
        return
    number = 0
    for table in batches():
        if batch_check(table):
            number += table.num_rows
            yield number, table.num_rows
            continue
        for row in table.to_pylist():
            number += 1
            yield JsonlLine(number, row=row)


def iter_examples(
    path: str | Path,
    row_models: tuple[type[BaseModel], ...],
    *,
    source_kind: str = "jsonl",
    transform: str | None = None,
    templates: TemplateChecks | None = None,
    registry: PluginRegistry | None = None,
    options: SourceOptions | None = None,
    build_row: RowBuilder | None = None,
    other_shapes: Mapping[type[BaseModel], tuple[str, ...]] | None = None,
    count_only: bool = False,
) -> Iterator[tuple[Location, BaseModel | None, list[Problem] | type[BaseModel] | int]]:
    """Yield ``(location, example, problems)`` for every row; ``example`` is None when the row is invalid.

    ``options`` (else ``source_kind`` and ``transform``) says how rows are read; ``build_row(raw, number)``
    turns a raw row into the row to validate (default: ``columns`` applied, when given). When a row
    is invalid but valid for a row model in ``other_shapes``, that model comes instead of the problems.
    With ``count_only``, a batch of a dataset that its Arrow types prove valid comes as one item
    whose third element is its row count (see :mod:`evsys.data.arrow_check`).
    """
    registry = registry or default_registry()
    options = options or SourceOptions(source_kind=source_kind, transform=transform)
    columns = options.columns
    batch_check = prompt_batch_check(columns, row_models, options.transform, templates) if count_only and build_row is None else None
    if build_row is None and columns is not None:
        mapping = columns

        def build_row(raw: dict[str, Any], number: int) -> dict[str, Any]:
            return example_row(raw, mapping)

    transform_fn = load_transform(registry.get("transform", options.transform)) if options.transform else None
    rows = open_source(path, options, registry)
    label = str(getattr(rows, "label", path))
    unit = getattr(rows, "unit", None)
    for item in _numbered_rows(rows, batch_check):
        if isinstance(item, tuple):
            yield Location(label, item[0], unit=unit), None, item[1]
            continue
        location = Location(label, item.line, unit=unit)
        if item.error is not None:
            yield location, None, [Problem(item.error, location)]
            continue
        row = item.row
        if transform_fn is not None:
            try:
                row = transform_fn(row)
            except Exception as exc:  # a user transform's failure is reported per line
                yield location, None, [Problem(f"transform '{options.transform}' failed: {type(exc).__name__}: {exc}", location)]
                continue
            if row is None:
                continue
        if build_row is not None and isinstance(row, dict):
            try:
                row = build_row(row, item.line)
            except ColumnProblem as exc:
                yield location, None, [Problem(exc.message, location, exc.column)]
                continue
        example, problems = _validate_row(row, row_models, location, columns)
        if example is None and other_shapes:
            shape = _other_shape(row, other_shapes)
            if shape is not None:
                yield location, None, shape
                continue
        if example is not None and templates:
            problems = _check_templates(example, templates, location)
            if problems:
                example = None
        yield location, example, problems


def _shape_of(model: type[BaseModel]) -> str:
    shape = getattr(model, "shape", None)
    return shape if isinstance(shape, str) else model.__name__


def _shape_problem(
    shape: type[BaseModel], count: int, first: Location, algorithm: str | None, names: tuple[str, ...], row_models: tuple[type[BaseModel], ...]
) -> Problem:
    takers = f"only {names[0]} takes" if len(names) == 1 else f"{' and '.join(names)} take"
    rows = "the row is" if count == 1 else f"{count} rows are"
    wanted = " or ".join(_shape_of(m) for m in row_models)
    return Problem(
        f"{rows} {_shape_of(shape)}, which {takers}; {algorithm or 'this algorithm'} takes {wanted} (first at {first})",
        Location(first.path),
    )


def _collect(
    path: str | Path,
    row_models: tuple[type[BaseModel], ...],
    options: dict[str, Any],
    max_reported: int,
    keep: bool,
    algorithm: str | None = None,
) -> tuple[list[BaseModel], int, list[Problem]]:
    """Valid examples (kept only if ``keep``), their count, and at most ``max_reported`` problems."""
    examples: list[BaseModel] = []
    valid = 0
    problems: list[Problem] = []
    hidden = 0
    shapes: dict[type[BaseModel], tuple[int, Location]] = {}
    label = str(path)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # many long-lived rows without cycles: the cyclic GC would rescan them again and again
    try:
        for location, example, row_problems in iter_examples(path, row_models, **options):
            label = location.path
            if isinstance(row_problems, int):
                valid += row_problems
                continue
            if example is not None:
                valid += 1
                if keep:
                    examples.append(example)
                continue
            if isinstance(row_problems, type):
                count, first = shapes.get(row_problems, (0, location))
                shapes[row_problems] = (count + 1, first)
                continue
            for problem in row_problems:
                if len(problems) < max_reported:
                    problems.append(problem)
                else:
                    hidden += 1
    finally:
        if gc_was_enabled:
            gc.enable()
    other_shapes = options.get("other_shapes") or {}
    for shape, (count, first) in shapes.items():
        problems.insert(0, _shape_problem(shape, count, first, algorithm, other_shapes[shape], row_models))
    if hidden:
        problems.append(Problem(f"... and {hidden} more problem(s)", Location(label)))
    if not valid and not problems:
        problems.append(Problem("no examples: the file is empty", Location(label)))
    return examples, valid, problems


def _options(
    source: SourceOptions | None,
    source_kind: str,
    transform: str | None,
    templates: TemplateChecks | None,
    registry: PluginRegistry | None,
    algorithm: str | None,
) -> dict[str, Any]:
    registry = registry or default_registry()
    other = other_algorithm_shapes(registry, algorithm) if algorithm else None
    return {
        "options": source or SourceOptions(source_kind=source_kind, transform=transform),
        "templates": templates,
        "registry": registry,
        "other_shapes": other,
    }


def check_examples_file(
    path: str | Path,
    row_models: tuple[type[BaseModel], ...],
    *,
    source_kind: str = "jsonl",
    transform: str | None = None,
    templates: TemplateChecks | None = None,
    registry: PluginRegistry | None = None,
    max_reported: int = MAX_REPORTED,
    options: SourceOptions | None = None,
    algorithm: str | None = None,
) -> tuple[int, list[Problem]]:
    """Check every row; returns ``(valid row count, problems)`` with at most ``max_reported`` problems listed.

    With ``algorithm``, rows that another algorithm takes are reported in one line naming it.
    """
    opts = _options(options, source_kind, transform, templates, registry, algorithm)
    _, valid, problems = _collect(path, row_models, {**opts, "count_only": True}, max_reported, keep=False, algorithm=algorithm)
    return valid, problems


def load_examples(
    path: str | Path,
    row_models: tuple[type[BaseModel], ...],
    *,
    source_kind: str = "jsonl",
    transform: str | None = None,
    templates: TemplateChecks | None = None,
    registry: PluginRegistry | None = None,
    options: SourceOptions | None = None,
    algorithm: str | None = None,
) -> list[BaseModel]:
    """Every example of the file; any bad row raises :class:`DataError` listing all problems."""
    opts = _options(options, source_kind, transform, templates, registry, algorithm)
    examples, _, problems = _collect(path, row_models, opts, MAX_REPORTED, keep=True, algorithm=algorithm)
    if problems:
        raise DataError(problems)
    return examples


def source_options(spec: Any, *, offline: bool = False) -> SourceOptions:
    """The :class:`SourceOptions` of a config's ``data`` (a :class:`~evsys.schema.config.DataSpec`)."""
    return SourceOptions(
        offline=offline,
        source_kind=spec.source_kind,
        split=spec.split,
        subset=spec.subset,
        columns=dict(spec.columns) if spec.columns is not None else None,
        transform=spec.transform,
    )
