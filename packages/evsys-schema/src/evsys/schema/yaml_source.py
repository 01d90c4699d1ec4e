"""Load YAML keeping the line and column of every key, and refusing duplicate keys."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evsys.schema.errors import ConfigError, Location, Problem, unreadable_file

FieldPath = tuple[str | int, ...]


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, also reading ``1e-4`` (no dot) as a float, as YAML 1.2 and JSON do."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


@dataclass
class YamlDocument:
    """A parsed YAML document and the position of each field path in its source file."""

    path: str
    data: Any
    positions: dict[FieldPath, tuple[int, int]] = field(default_factory=dict)

    def locate(self, field_path: FieldPath) -> Location:
        """The location of ``field_path``, or of its nearest ancestor that has one."""
        probe = tuple(field_path)
        while probe:
            if probe in self.positions:
                line, column = self.positions[probe]
                return Location(self.path, line, column)
            probe = probe[:-1]
        line, column = self.positions.get((), (1, 1))
        return Location(self.path, line, column)


def format_field_path(field_path: FieldPath) -> str:
    """``("metadata", "benchmark", 0, "name")`` -> ``metadata.benchmark[0].name``."""
    text = ""
    for part in field_path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "<root>"


def _construct(node: yaml.Node, path: FieldPath, doc: YamlDocument, loader: yaml.SafeLoader) -> Any:
    doc.positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                raise ConfigError(
                    Problem(
                        "a mapping key must be a plain string",
                        Location(doc.path, key_node.start_mark.line + 1, key_node.start_mark.column + 1),
                        format_field_path(path) if path else None,
                    )
                )
            key = str(key) if not isinstance(key, str) else key
            child = (*path, key)
            if key in result:
                first_line, _ = doc.positions[child]
                raise ConfigError(
                    Problem(
                        f"duplicate key '{key}' (first defined on line {first_line})",
                        Location(doc.path, key_node.start_mark.line + 1, key_node.start_mark.column + 1),
                        format_field_path(child),
                    )
                )
            doc.positions[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            result[key] = _construct(value_node, child, doc, loader)
            doc.positions[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, (*path, index), doc, loader) for index, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def parse_yaml(text: str, path: str) -> YamlDocument:
    """Parse one YAML document; syntax errors and duplicate keys raise :class:`ConfigError` with a location."""
    doc = YamlDocument(path=path, data=None)
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            doc.data = None if node is None else _construct(node, (), doc, loader)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        location = Location(path, mark.line + 1, mark.column + 1) if mark else Location(path)
        message = exc.problem or "invalid YAML"
        if exc.context:
            message = f"{exc.context}, {message}"
        if "'\\t'" in message:
            message += " (YAML indents with spaces, not tabs)"
        raise ConfigError(Problem(f"invalid YAML: {message}", location)) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow; it knows only the offset
        position = max(0, int(exc.position))
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        character = exc.character if isinstance(exc.character, str) else chr(exc.character)
        message = f"invalid YAML: character #x{ord(character):04x} is not allowed in a YAML file"
        raise ConfigError(Problem(message, Location(path, line, column))) from None
    except yaml.YAMLError as exc:
        raise ConfigError(Problem(f"invalid YAML: {exc}", Location(path))) from None
    return doc


def load_yaml_file(path: str | Path) -> YamlDocument:
    """Read and parse a YAML file; an unreadable file raises :class:`ConfigError` naming it."""
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(unreadable_file(exc, name, "is a directory, not a config file")) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(Problem(f"not valid UTF-8 (byte {exc.start})", Location(name))) from None
    return parse_yaml(text, name)
