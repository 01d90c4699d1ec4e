"""``check_plugin``: a plugin module registers cleanly and every target it names exists."""

from __future__ import annotations

from typing import Any

from evsys.schema.plugins import build_registry
from evsys.schema.registry import PluginRegistry
from evsys.schema.targets import target_problem
from evsys.testing.contracts import ContractError


def check_plugin(module: Any, distribution: str) -> PluginRegistry:
    """Register ``module`` (a plugin module with an ``evsys_register`` hook) alone, as ``distribution``.

    The hook must run without error, register at least one name, and every ``"module:attr"`` target
    (and backend ``checker``/``prompt_checker``) must name a module that exists and an attribute its
    source defines — checked as ``evsys validate --deep`` checks them, without importing the targets.
    Returns the registry; raises :class:`ContractError` naming the first broken promise.
    """
    registry = build_registry(plugins=[(distribution, module)], autoload=False, in_process=False)
    if registry.broken:
        raise ContractError(f"plugin {distribution} is broken: {registry.broken[0].error}")
    registrations = registry.registrations()
    if not registrations:
        raise ContractError(f"plugin {distribution} registers nothing: define `@hookimpl def evsys_register(register)`")
    for registration in registrations:
        problem = registration.target_problem()
        if problem is not None:
            raise ContractError(problem)
        for key in ("checker", "prompt_checker"):
            target = registration.meta.get(key)
            problem = target_problem(target) if target else None
            if problem is not None:
                raise ContractError(f"{registration.label} of plugin {distribution} has a broken {key} {target}: {problem}")
    return registry
