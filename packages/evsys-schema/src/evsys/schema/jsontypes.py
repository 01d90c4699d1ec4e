"""Make pydantic agree with JSON Schema on types: no string-to-number or bool-to-int coercion.

pydantic's lax mode turns ``"2"`` into ``2`` and ``true`` into ``1``; JSON Schema (and so an
editor using ``schemas/``) rejects both. :func:`check_json_type` runs before each field of a
:class:`~evsys.schema.config.StrictModel` and rejects a scalar whose JSON type the field's
annotation does not allow, so both say the same about every document.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticCustomError

#: JSON types an annotation allows; None means "anything" (no check)
Allowed = frozenset[str] | None


class _Shape(typing.NamedTuple):
    allowed: Allowed
    item: _Shape | None = None  # element shape of an array (homogeneous) or values of an object


_ANY = _Shape(None)
_ORDER = ("string", "integer", "number", "boolean", "array", "object", "null")
_CACHE: dict[tuple[type, str], _Shape] = {}


def _literal_types(values: Sequence[Any]) -> Allowed:
    found: set[str] = set()
    for value in values:
        kind = json_type_name(value)
        if kind is None:
            return None
        found.add(kind)
    return frozenset(found)


def _shape(annotation: Any) -> _Shape:
    if annotation is Any or annotation is object or annotation is None:
        return _ANY
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _shape(args[0])
    if origin is typing.Literal:
        return _Shape(_literal_types(args))
    if origin in (typing.Union, types.UnionType):
        allowed: set[str] = set()
        items: list[_Shape] = []
        for arg in args:
            sub = _shape(arg)
            if sub.allowed is None:
                return _ANY
            allowed |= sub.allowed
            if sub.item is not None:
                items.append(sub.item)
        item = items[0] if len(items) == 1 else (_ANY if items else None)
        return _Shape(frozenset(allowed), item)
    if annotation is type(None):
        return _Shape(frozenset({"null"}))
    if annotation is bool:
        return _Shape(frozenset({"boolean"}))
    if annotation is int:
        return _Shape(frozenset({"integer"}))
    if annotation is float:
        return _Shape(frozenset({"number"}))
    if annotation is str or annotation is bytes:
        return _Shape(frozenset({"string"}))
    if isinstance(annotation, type) and issubclass(annotation, PurePath):
        return _Shape(frozenset({"string"}))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _Shape(_literal_types([member.value for member in annotation]))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _Shape(frozenset({"object"}))
    container = origin or annotation
    if container in (list, tuple, set, frozenset) or (isinstance(container, type) and container is Sequence):
        if container is tuple and len(args) == 2 and args[1] is Ellipsis:
            args = args[:1]  # tuple[X, ...]
        homogeneous = len(set(args)) == 1  # list[X], or a fixed tuple of one type such as tuple[float, float]
        item = _shape(args[0]) if homogeneous else _ANY
        return _Shape(frozenset({"array"}), item)
    if container in (dict, Mapping) or (isinstance(container, type) and issubclass(container, dict)):
        return _Shape(frozenset({"object"}), _shape(args[1]) if len(args) == 2 else _ANY)
    return _ANY


def json_type_name(value: Any) -> str | None:
    """The JSON Schema type of a parsed value (``"integer"``, ``"string"``, ...); ``None`` for other objects."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return None


def _fits(value: Any, allowed: frozenset[str]) -> bool:
    kind = json_type_name(value)
    if kind is None or kind in allowed or kind in ("array", "object"):
        return True  # containers of the wrong kind: pydantic's own message is the better one
    if kind == "integer" and "number" in allowed:
        return True
    return kind == "number" and "integer" in allowed and float(value).is_integer()


def _describe(allowed: frozenset[str]) -> str:
    names = [name for name in _ORDER if name in allowed and name != "null"]
    return " or ".join(names) or "null"


def _check(value: Any, shape: _Shape, where: str) -> None:
    if shape.allowed is None:
        return
    if not _fits(value, shape.allowed):
        shown = json.dumps(value if not isinstance(value, str) or len(value) <= 40 else value[:37] + "...")
        raise PydanticCustomError(
            "json_type",
            "Input should be a valid {expected}{where}, got {got} {shown}",
            {"expected": _describe(shape.allowed), "where": where, "got": json_type_name(value), "shown": shown},
        )
    item = shape.item
    if item is None or item.allowed is None:
        return
    if isinstance(value, (list, tuple)) and "array" in shape.allowed:
        for index, element in enumerate(value):
            _check(element, item, f" (item {index})")
    elif isinstance(value, dict) and "object" in shape.allowed:
        for key, element in value.items():
            _check(element, item, f" (key '{key}')")


def field_shape(model: type[BaseModel], field_name: str) -> _Shape:
    """The JSON types field ``field_name`` of ``model`` allows (cached)."""
    key = (model, field_name)
    shape = _CACHE.get(key)
    if shape is None:
        info = model.model_fields.get(field_name)
        shape = _shape(info.annotation) if info is not None else _ANY
        _CACHE[key] = shape
    return shape


def check_json_type(model: type[BaseModel], field_name: str, value: Any) -> None:
    """Raise a pydantic error when ``value``'s JSON type is not one field ``field_name`` allows."""
    _check(value, field_shape(model, field_name), "")
