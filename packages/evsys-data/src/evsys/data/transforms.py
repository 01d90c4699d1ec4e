"""``@register_transform``: turn raw rows of another shape into EvSys examples.

Use it in a ``run.py`` before ``evsys.cli.run(...)``, or ship it in a plugin package through the
``evsys_register_transforms`` hook. A transform takes one raw row (a dict) and returns the example
row (a dict), or None to drop the row::

    from evsys.data import register_transform

    @register_transform("qa_pairs")
    def qa_pairs(row):
        return {"inputs": {"question": row["q"]}, "expected": row["a"]}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from evsys.schema.errors import PluginError
from evsys.schema.plugins import default_registry
from evsys.schema.registry import Registration

TransformFunction = Callable[[dict[str, Any]], "dict[str, Any] | None"]
F = TypeVar("F", bound=TransformFunction)

#: transforms registered at run time with the decorator, by name
RUNTIME_TRANSFORMS: dict[str, Callable[..., Any]] = {}
RUNTIME_DISTRIBUTION = "<register_transform>"


def _target_of(function: Callable[..., Any]) -> str:
    return f"{function.__module__}:{function.__qualname__}"


def register_transform(name: str) -> Callable[[F], F]:
    """Register the decorated function as transform ``name`` (used as ``data.transform: name``)."""

    def decorate(function: F) -> F:
        if name in RUNTIME_TRANSFORMS and RUNTIME_TRANSFORMS[name] is not function:
            raise PluginError(f"transform '{name}' is registered twice with @register_transform")
        RUNTIME_TRANSFORMS[name] = function
        registry = default_registry()
        existing = registry.find("transform", name)
        if existing is None:
            registry.add(Registration("transform", name, _target_of(function), RUNTIME_DISTRIBUTION))
        elif existing.distribution != RUNTIME_DISTRIBUTION:
            raise PluginError(f"transform '{name}' is registered twice: by {existing.distribution} and by @register_transform")
        return function

    return decorate


def load_transform(registration: Registration) -> TransformFunction:
    """The transform function of a registration (runtime ones are taken from memory)."""
    runtime = RUNTIME_TRANSFORMS.get(registration.name)
    if runtime is not None and _target_of(runtime) == registration.target:
        return runtime
    function = registration.load()
    if not callable(function):
        raise PluginError(f"transform '{registration.name}' ({registration.target}) is not callable")
    return function
