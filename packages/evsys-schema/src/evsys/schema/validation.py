"""Shallow config validation: schema, kinds and params, every problem with its file, line and field."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from evsys.schema.config import RunConfig
from evsys.schema.errors import ConfigError, Location, Problem
from evsys.schema.params import NoParams
from evsys.schema.registry import PluginRegistry
from evsys.schema.suggest import did_you_mean
from evsys.schema.yaml_source import FieldPath, YamlDocument, format_field_path, load_yaml_file


@dataclass
class ValidatedConfig:
    """A config that passed shallow validation, with each kind's params validated by its model."""

    config: RunConfig
    document: YamlDocument
    algorithm_params: BaseModel
    backend_params: BaseModel
    callback_params: list[BaseModel] = field(default_factory=list)

    @property
    def path(self) -> str:
        """The config file's path as given."""
        return self.document.path


def _unwrap(annotation: Any) -> Any:
    """Strip Optional/list/dict wrappers to the model class a nested key would belong to."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                return _unwrap(arg)
    if origin in (list, tuple, dict):
        args = typing.get_args(annotation)
        return _unwrap(args[-1]) if args else None
    return annotation


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = current.model_fields.get(str(part))
        if info is None:
            return None
        current = _unwrap(info.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def pydantic_problems(
    error: ValidationError, model: type[BaseModel], document: YamlDocument | None, prefix: FieldPath = (), path: str = ""
) -> list[Problem]:
    """Turn a pydantic ``ValidationError`` into located problems; unknown keys get a 'did you mean'."""
    problems: list[Problem] = []
    for item in error.errors(include_url=False):
        loc = tuple(item["loc"])
        full: FieldPath = (*prefix, *loc)
        kind = item["type"]
        if kind == "extra_forbidden":
            parent = _model_at(model, loc[:-1])
            known = list(parent.model_fields) if parent else []
            message = f"unknown key '{loc[-1]}'{did_you_mean(str(loc[-1]), known)}"
        elif kind == "missing":
            message = "required field is missing"
        else:
            message = item["msg"]
            if message.startswith("Value error, "):
                message = message[len("Value error, ") :]
        location = document.locate(full) if document is not None else (Location(path) if path else None)
        problems.append(Problem(message, location, format_field_path(full)))
    return problems


def _validate_params(
    registry: PluginRegistry,
    kind: str,
    name: str,
    params: dict[str, Any],
    document: YamlDocument,
    at: FieldPath,
    problems: list[Problem],
) -> BaseModel | None:
    found = registry.find(kind, name)
    if found is None:
        problems.append(_unknown(registry, kind, name, document, (*at, "kind")))
        return None
    if found.params is None:
        if params:
            problems.append(Problem(f"{kind} '{name}' takes no params", document.locate((*at, "params")), format_field_path((*at, "params"))))
            return None
        return NoParams()
    try:
        return found.params.model_validate(params)
    except ValidationError as exc:
        problems.extend(pydantic_problems(exc, found.params, document, (*at, "params")))
        return None


def _unknown(registry: PluginRegistry, kind: str, name: str, document: YamlDocument, at: FieldPath) -> Problem:
    return Problem(registry.missing_message(kind, name), document.locate(at), format_field_path(at))


def _kind_section(data: dict[str, Any], at: FieldPath) -> tuple[str, dict[str, Any]] | None:
    """``(kind, params)`` of a raw ``{kind, params}`` mapping when both are usable, else None."""
    section: Any = data
    for part in at:
        if isinstance(part, int):
            if not isinstance(section, list) or part >= len(section):
                return None
            section = section[part]
        else:
            if not isinstance(section, dict):
                return None
            section = section.get(part)
    if not isinstance(section, dict):
        return None
    kind, params = section.get("kind"), section.get("params", {})
    if not isinstance(kind, str) or not kind or not isinstance(params, dict):
        return None
    return kind, params


def _check_metric(registry: PluginRegistry, metric: str, document: YamlDocument, at: FieldPath) -> Problem | None:
    found = registry.find("metric", metric)
    if found is None:
        return _unknown(registry, "metric", metric, document, at)
    if metric.endswith(("@k", "^k")):
        example = metric[:-1]
        return Problem(
            f"'{metric}' names a family of metrics; write k as a number, e.g. '{example}1' or '{example}4'",
            document.locate(at),
            format_field_path(at),
        )
    return None


def _sort_key(problem: Problem) -> tuple[int, int]:
    location = problem.location
    if location is None:
        return (0, 0)
    return (location.line or 0, location.column or 0)


def validate_document(document: YamlDocument, registry: PluginRegistry) -> ValidatedConfig:
    """Validate a parsed config; raises :class:`ConfigError` listing every problem found, in file order.

    The structure (``RunConfig``), every ``kind`` and its ``params``, the data source and transform
    names and the metric names are all checked, so one run reports every problem at once.
    """
    data = document.data
    if not isinstance(data, dict):
        got = "an empty file" if data is None else type(data).__name__
        raise ConfigError(Problem(f"a config must be a YAML mapping, got {got}", document.locate(())))
    problems: list[Problem] = []
    config: RunConfig | None
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as exc:
        problems.extend(pydantic_problems(exc, RunConfig, document))
        config = None

    def params_of(kind: str, at: FieldPath) -> BaseModel | None:
        section = _kind_section(data, at)
        if section is None:
            return None
        return _validate_params(registry, kind, section[0], section[1], document, at, problems)

    algorithm_params = params_of("algorithm", ("algorithm",))
    backend_params = params_of("backend", ("backend",))
    raw_callbacks = data.get("callbacks")
    callback_params: list[BaseModel | None] = []
    if raw_callbacks is None and "callbacks" not in data:
        for index, callback in enumerate(RunConfig.model_fields["callbacks"].get_default(call_default_factory=True)):
            params = _validate_params(registry, "callback", callback.kind, dict(callback.params), document, ("callbacks", index), problems)
            callback_params.append(params)
    elif isinstance(raw_callbacks, list):
        for index in range(len(raw_callbacks)):
            callback_params.append(params_of("callback", ("callbacks", index)))

    raw_data = data.get("data")
    if isinstance(raw_data, dict):
        source_kind = raw_data.get("source_kind", "jsonl")
        if isinstance(source_kind, str) and source_kind and registry.find("source", source_kind) is None:
            problems.append(_unknown(registry, "source", source_kind, document, ("data", "source_kind")))
        transform = raw_data.get("transform")
        if isinstance(transform, str) and transform and registry.find("transform", transform) is None:
            problems.append(_unknown(registry, "transform", transform, document, ("data", "transform")))

    raw_metadata = data.get("metadata")
    benches = raw_metadata.get("benchmark") if isinstance(raw_metadata, dict) else None
    for index, bench in enumerate(benches if isinstance(benches, list) else []):
        metrics = bench.get("metrics") if isinstance(bench, dict) else None
        for m_index, metric in enumerate(metrics if isinstance(metrics, list) else []):
            if isinstance(metric, str):
                problem = _check_metric(registry, metric, document, ("metadata", "benchmark", index, "metrics", m_index))
                if problem is not None:
                    problems.append(problem)

    if config is not None:
        names_seen: dict[tuple[str, str], int] = {}
        for index, bench in enumerate(config.metadata.benchmark):
            at: FieldPath = ("metadata", "benchmark", index, "name")
            key = (bench.split, bench.name)
            if key in names_seen:
                problems.append(
                    Problem(
                        f"benchmark '{bench.name}' with split '{bench.split}' is listed twice (also entry {names_seen[key]})",
                        document.locate(at),
                        format_field_path(at),
                    )
                )
            names_seen[key] = index
    if problems:
        raise ConfigError(sorted(problems, key=_sort_key))
    assert config is not None and algorithm_params is not None and backend_params is not None
    return ValidatedConfig(config, document, algorithm_params, backend_params, callback_params)  # type: ignore[arg-type]


def load_config(path: str | Path, registry: PluginRegistry) -> ValidatedConfig:
    """Read, parse and validate a config file (shallow)."""
    return validate_document(load_yaml_file(path), registry)
