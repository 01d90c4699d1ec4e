"""Build the plugin manager and the registry of everything the installed plugins register.

Entry points of group ``evsys`` are loaded one by one, so a plugin that fails to import is
recorded in :attr:`PluginRegistry.broken` and does not break the others. Set
``EVSYS_DISABLE_PLUGIN_AUTOLOAD=1`` to load none; tests build their own manager with
:func:`build_registry` and explicit ``plugins``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from importlib import metadata
from typing import Any

import pluggy

from evsys.schema import hookspecs
from evsys.schema.errors import PluginError
from evsys.schema.hookspecs import PROJECT_NAME, hookimpl
from evsys.schema.registry import (
    AlgorithmRegistrar,
    BackendRegistrar,
    BrokenPlugin,
    CallbackRegistrar,
    MetricRegistrar,
    PluginRegistry,
    Registrar,
    SourceRegistrar,
    TransformRegistrar,
    VerifierRegistrar,
)

__all__ = ["DISABLE_AUTOLOAD_ENV", "ENTRY_POINT_GROUP", "build_registry", "default_registry", "hookimpl", "reset_default_registry"]

ENTRY_POINT_GROUP = "evsys"
DISABLE_AUTOLOAD_ENV = "EVSYS_DISABLE_PLUGIN_AUTOLOAD"

_HOOKS: tuple[tuple[str, type[Registrar]], ...] = (
    ("evsys_register_algorithms", AlgorithmRegistrar),
    ("evsys_register_backends", BackendRegistrar),
    ("evsys_register_verifiers", VerifierRegistrar),
    ("evsys_register_transforms", TransformRegistrar),
    ("evsys_register_callbacks", CallbackRegistrar),
    ("evsys_register_sources", SourceRegistrar),
    ("evsys_register_metrics", MetricRegistrar),
)


def _autoload_disabled() -> bool:
    return os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def build_registry(
    plugins: Iterable[tuple[str, Any]] = (),
    *,
    autoload: bool | None = None,
) -> PluginRegistry:
    """Build a registry from entry points (unless disabled) plus ``plugins`` given as ``(distribution, module)``.

    A duplicate name raises :class:`PluginError` naming both distributions.
    """
    if autoload is None:
        autoload = not _autoload_disabled()
    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    registry = PluginRegistry()
    origin: dict[int, tuple[str, str]] = {}

    def add_plugin(name: str, module: Any, distribution: str, version: str) -> None:
        if manager.is_registered(module) or manager.has_plugin(name):
            return
        try:
            manager.register(module, name=name)
        except Exception as exc:  # a malformed plugin is reported, not fatal
            registry.broken.append(BrokenPlugin(name, distribution, version, f"{type(exc).__name__}: {exc}"))
            return
        origin[id(module)] = (distribution, version)

    if autoload:
        seen: set[tuple[str, str]] = set()
        for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(entry_point, "dist", None)
            distribution = dist.name if dist is not None else entry_point.name
            version = dist.version if dist is not None else ""
            if (entry_point.name, entry_point.value) in seen:
                continue
            seen.add((entry_point.name, entry_point.value))
            try:
                module = entry_point.load()
            except Exception as exc:  # a broken plugin must not break the others
                registry.broken.append(BrokenPlugin(entry_point.name, distribution, version, f"{type(exc).__name__}: {exc}"))
                continue
            add_plugin(entry_point.name, module, distribution, version)
    for distribution, module in plugins:
        add_plugin(distribution, module, distribution, _version_of(distribution))

    for hook_name, registrar_type in _HOOKS:
        caller = getattr(manager.hook, hook_name)
        for impl in reversed(caller.get_hookimpls()):
            distribution, version = origin.get(id(impl.plugin), (impl.plugin_name, ""))
            registrar = registrar_type(registry, distribution, version)
            try:
                impl.function(registry=registrar)
            except PluginError:
                raise
            except Exception as exc:  # a hook that raises marks its plugin broken
                registry.broken.append(BrokenPlugin(impl.plugin_name, distribution, version, f"{hook_name}: {type(exc).__name__}: {exc}"))
    return registry


def _version_of(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""


_DEFAULT: PluginRegistry | None = None


def default_registry() -> PluginRegistry:
    """The registry of the installed plugins, built once per process."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = build_registry()
    return _DEFAULT


def reset_default_registry(registry: PluginRegistry | None = None) -> None:
    """Replace (or drop, to rebuild on next use) the process-wide registry; for tests and embedding."""
    global _DEFAULT
    _DEFAULT = registry
