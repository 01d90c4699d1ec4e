"""``@register_transform``: turn raw rows of another shape into EvSys examples.

Use it in a ``run.py`` before ``evsys.cli.run(...)``, or ship the transform in a plugin package
(``register.transform(...)`` in its ``evsys_register`` hook). A transform takes one raw row (a
dict) and returns the example row (a dict), or None to drop the row::

    from evsys.data import register_transform

    @register_transform("qa_pairs")
    def qa_pairs(row):
        return {"inputs": {"question": row["q"]}, "expected": row["a"]}

The decorator records the function in this process (:func:`evsys.schema.plugins.register_in_process`):
every registry built afterwards has it, ``run(registry=...)``'s as well as the process-wide one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from evsys.schema.errors import PluginError
from evsys.schema.plugins import register_in_process
from evsys.schema.registry import Registration

TransformFunction = Callable[[dict[str, Any]], "dict[str, Any] | None"]
F = TypeVar("F", bound=TransformFunction)


def register_transform(name: str) -> Callable[[F], F]:
    """Register the decorated function as transform ``name`` (used as ``data.transform: name``)."""

    def decorate(function: F) -> F:
        target = f"{function.__module__}:{function.__qualname__}"
        register_in_process(Registration("transform", name, target, function.__module__, loaded=function))
        return function

    return decorate


def load_transform(registration: Registration) -> TransformFunction:
    """The transform function of a registration, or :class:`PluginError` when it is not callable."""
    function = registration.load()
    if not callable(function):
        raise PluginError(f"transform '{registration.name}' ({registration.target}) is not callable")
    return function
