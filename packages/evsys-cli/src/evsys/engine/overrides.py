"""Command-line overrides: ``--set algorithm.params.max_steps=10``, ``--name x``, ``--output-dir d``.

An override replaces (or adds) one key of the config file before validation, so it is checked
exactly like a key written in the file. Its value is parsed as YAML (``10`` is an integer,
``1e-4`` a float, ``[a, b]`` a list, ``null`` null) and then typed by the schema: where the field
takes a string and the YAML value is of a type the field does not take (``--set name=2024``,
``--set algorithm.params.user_template={question}``), the text is kept as written. A problem with
an overridden key is reported against the argument, not the file::

    --set algorithm.params.max_stpes=10: unknown key 'max_stpes' (did you mean 'max_steps'?)
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evsys.schema.config import RunConfig
from evsys.schema.errors import ConfigError, EvsysError, Location, Problem
from evsys.schema.jsontypes import field_shape, json_type_name
from evsys.schema.registry import PluginRegistry
from evsys.schema.validation import ValidatedConfig, _model_at, validate_document
from evsys.schema.yaml_source import FieldPath, YamlDocument, format_field_path, load_yaml_file, parse_yaml

_SEGMENT = re.compile(r"^([^.\[\]]+)((?:\[\d+\])*)$")


@dataclass(frozen=True)
class Override:
    """One override as given on the command line: the option, its text, the key path and the value."""

    option: str
    text: str
    path: FieldPath
    raw: str
    value: Any
    parse_yaml: bool = True

    @property
    def label(self) -> str:
        """How problems name it: ``--set algorithm.params.max_steps=10`` or ``--name x``."""
        return f"{self.option} {self.text}"


def _problem(label: str, message: str) -> ConfigError:
    return ConfigError(Problem(message, Location(label)))


def parse_key(key: str, label: str) -> FieldPath:
    """``metadata.benchmark[0].run_every`` (or ``metadata.benchmark.0.run_every``) as a field path."""
    path: list[str | int] = []
    for segment in key.split("."):
        match = _SEGMENT.match(segment.strip())
        if match is None:
            raise _problem(label, f"'{key}' is not a key path (write keys joined by dots, e.g. algorithm.params.max_steps)")
        name, indexes = match.groups()
        path.append(int(name) if name.isdigit() else name)
        path.extend(int(index) for index in re.findall(r"\[(\d+)\]", indexes))
    return tuple(path)


def parse_set(text: str, option: str = "--set") -> Override:
    """Parse ``KEY=VALUE``; the value is YAML (typed later by the schema, see the module doc)."""
    label = f"{option} {text}"
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise _problem(label, "expected KEY=VALUE, e.g. --set algorithm.params.max_steps=10")
    path = parse_key(key.strip(), label)
    value = parse_yaml(raw, label).data if raw.strip() else ("" if raw else None)
    return Override(option, text, path, raw, value)


def shorthand(option: str, key: str, value: str) -> Override:
    """``--name x`` / ``--output-dir d``: the key set to the text as written (never YAML-parsed)."""
    return Override(option, value, (key,), value, value, parse_yaml=False)


def as_overrides(items: Sequence[str | Override]) -> list[Override]:
    """Accept ``"key=value"`` strings (as ``--set`` takes them) and :class:`Override` objects."""
    return [item if isinstance(item, Override) else parse_set(item) for item in items]


@dataclass
class OverriddenDocument(YamlDocument):
    """A config document with overrides applied; problems at an overridden key point at its argument."""

    overrides: list[Override] = field(default_factory=list)

    def locate(self, field_path: FieldPath) -> Location:
        """The override argument that set ``field_path`` (or a key above it), else the file position."""
        probe = tuple(field_path)
        for override in reversed(self.overrides):
            if probe[: len(override.path)] == override.path:
                return Location(override.label)
        return super().locate(field_path)


def _field_types(data: Any, path: FieldPath, registry: PluginRegistry) -> frozenset[str] | None:
    """The JSON types the schema allows at ``path`` (None when unknown, e.g. inside a free-form mapping)."""
    name = path[-1] if path else None
    if not isinstance(name, str):
        return None
    model: Any = None
    head = path[:-1]
    if head in (("algorithm", "params"), ("backend", "params")) and isinstance(data.get(head[0]), dict):
        found = registry.find(str(head[0]), str(data[head[0]].get("kind")))
        model = found.params if found is not None else None
    elif len(head) == 3 and head[0] == "callbacks" and isinstance(head[1], int) and head[2] == "params":
        callbacks = data.get("callbacks")
        if isinstance(callbacks, list) and head[1] < len(callbacks) and isinstance(callbacks[head[1]], dict):
            found = registry.find("callback", str(callbacks[head[1]].get("kind")))
            model = found.params if found is not None else None
    elif "params" not in head:
        model = _model_at(RunConfig, head) if head else RunConfig
    if model is None or name not in model.model_fields:
        return None
    return field_shape(model, name).allowed


def _typed(override: Override, data: Any, registry: PluginRegistry) -> Any:
    """The override's value, typed by the schema (see the module doc)."""
    value = override.value
    if not override.parse_yaml or isinstance(value, str):
        return value
    allowed = _field_types(data, override.path, registry)
    kind = json_type_name(value)
    fits = allowed is None or kind in allowed or (kind == "integer" and "number" in allowed)
    return value if fits or "string" not in allowed else override.raw  # type: ignore[operator]


def _assign(data: Any, override: Override, value: Any) -> None:
    node = data
    path = override.path
    for depth, part in enumerate(path):
        last = depth == len(path) - 1
        where = format_field_path(path[:depth]) or "the config"
        if isinstance(part, int):
            if not isinstance(node, list):
                raise _problem(override.label, f"{where} is not a list, so it has no item [{part}]")
            if part >= len(node):
                raise _problem(override.label, f"{where} has {len(node)} item{'s' if len(node) != 1 else ''}; [{part}] is not one of them")
            if last:
                node[part] = value
            else:
                node = node[part]
            continue
        if not isinstance(node, dict):
            raise _problem(override.label, f"{where} is not a mapping, so it has no key '{part}'")
        if last:
            node[part] = value
        else:
            if node.get(part) is None:
                node[part] = [] if isinstance(path[depth + 1], int) else {}
            node = node[part]


def apply_overrides(document: YamlDocument, overrides: Sequence[Override], registry: PluginRegistry) -> OverriddenDocument:
    """A copy of ``document`` with each override applied in order (later ones win)."""
    data = copy.deepcopy(document.data)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(Problem("a config must be a YAML mapping", document.locate(())))
    problems: list[Problem] = []
    for override in overrides:
        try:
            _assign(data, override, _typed(override, data, registry))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems)
    return OverriddenDocument(document.path, data, dict(document.positions), list(overrides))


def _point_at_arguments(error: EvsysError, labels: set[str]) -> list[Problem]:
    """Problems located at an override argument drop the field path (the argument names it)."""
    problems = []
    for problem in error.problems:
        if problem.location is not None and problem.location.path in labels:
            problem = Problem(problem.message, problem.location, None, problem.severity)
        problems.append(problem)
    return problems


def load_config_with_overrides(path: str | Path, registry: PluginRegistry, overrides: Sequence[str | Override] = ()) -> ValidatedConfig:
    """Read ``path``, apply ``overrides`` and validate (every problem at once, overridden keys at their argument)."""
    parsed = as_overrides(overrides)
    document = load_yaml_file(path)
    if not parsed:
        return validate_document(document, registry)
    overridden = apply_overrides(document, parsed, registry)
    try:
        return validate_document(overridden, registry)
    except ConfigError as exc:
        raise ConfigError(_point_at_arguments(exc, {o.label for o in parsed})) from None


def override_texts(validated: ValidatedConfig) -> list[str]:
    """The overrides a validated config was loaded with, as ``--set key=value`` texts (for the snapshot)."""
    document = validated.document
    if not isinstance(document, OverriddenDocument):
        return []
    return [f"{format_field_path(o.path)}={o.raw}" for o in document.overrides]

