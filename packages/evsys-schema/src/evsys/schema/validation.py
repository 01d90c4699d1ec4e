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
        known = registry.names(kind)
        problems.append(
            Problem(
                f"unknown {kind} '{name}'{did_you_mean(name, known)}; registered: {', '.join(known) or 'none'}",
                document.locate((*at, "kind")),
                format_field_path((*at, "kind")),
            )
        )
        return None
    if found.params is None:
        if params:
            problems.append(Problem(f"{kind} '{name}' takes no params", document.locate((*at, "params")), format_field_path((*at, "params"))))
        return None
    try:
        return found.params.model_validate(params)
    except ValidationError as exc:
        problems.extend(pydantic_problems(exc, found.params, document, (*at, "params")))
        return None


def validate_document(document: YamlDocument, registry: PluginRegistry) -> ValidatedConfig:
    """Validate a parsed config; raises :class:`ConfigError` listing every problem found."""
    data = document.data
    if not isinstance(data, dict):
        got = "an empty file" if data is None else type(data).__name__
        raise ConfigError(Problem(f"a config must be a YAML mapping, got {got}", document.locate(())))
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(pydantic_problems(exc, RunConfig, document)) from None
    problems: list[Problem] = []
    algorithm_params = _validate_params(registry, "algorithm", config.algorithm.kind, config.algorithm.params, document, ("algorithm",), problems)
    backend_params = _validate_params(registry, "backend", config.backend.kind, config.backend.params, document, ("backend",), problems)
    callback_params = []
    for index, callback in enumerate(config.callbacks):
        params = _validate_params(registry, "callback", callback.kind, callback.params, document, ("callbacks", index), problems)
        callback_params.append(params)
    if config.data.source_kind and registry.find("source", config.data.source_kind) is None:
        known = registry.names("source")
        problems.append(
            Problem(
                f"unknown source '{config.data.source_kind}'{did_you_mean(config.data.source_kind, known)}; registered: {', '.join(known) or 'none'}",
                document.locate(("data", "source_kind")),
                "data.source_kind",
            )
        )
    if config.data.transform and registry.find("transform", config.data.transform) is None:
        known = registry.names("transform")
        problems.append(
            Problem(
                f"unknown transform '{config.data.transform}'{did_you_mean(config.data.transform, known)}; registered: {', '.join(known) or 'none'}",
                document.locate(("data", "transform")),
                "data.transform",
            )
        )
    names_seen: dict[tuple[str, str], int] = {}
    for index, bench in enumerate(config.metadata.benchmark):
        at = ("metadata", "benchmark", index)
        key = (bench.split, bench.name)
        if key in names_seen:
            problems.append(Problem(f"benchmark '{bench.name}' with split '{bench.split}' is listed twice (also entry {names_seen[key]})", document.locate((*at, "name")), format_field_path((*at, "name"))))
        names_seen[key] = index
        for m_index, metric in enumerate(bench.metrics):
            if registry.find("metric", metric) is None:
                known = registry.names("metric")
                problems.append(
                    Problem(
                        f"unknown metric '{metric}'{did_you_mean(metric, known)}; registered: {', '.join(known) or 'none'}",
                        document.locate((*at, "metrics", m_index)),
                        format_field_path((*at, "metrics", m_index)),
                    )
                )
    if problems:
        raise ConfigError(problems)
    assert algorithm_params is not None and backend_params is not None
    return ValidatedConfig(config, document, algorithm_params, backend_params, callback_params)  # type: ignore[arg-type]


def load_config(path: str | Path, registry: PluginRegistry) -> ValidatedConfig:
    """Read, parse and validate a config file (shallow)."""
    return validate_document(load_yaml_file(path), registry)
