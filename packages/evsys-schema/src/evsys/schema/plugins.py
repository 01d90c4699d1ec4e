"""Build the plugin manager and the registry of everything the installed plugins register.

Entry points of group ``evsys`` are loaded one by one, so a plugin that fails to import, defines
a hook EvSys does not call, or raises in its ``evsys_register`` hook is recorded in
:attr:`PluginRegistry.broken` and does not break the others. Set ``EVSYS_DISABLE_PLUGIN_AUTOLOAD=1``
to load none; tests build their own manager with :func:`build_registry` and explicit ``plugins``.
Registrations made in this process (:func:`register_in_process`, used by ``@register_transform``)
join every registry built afterwards, and the process-wide one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from importlib import metadata
from typing import Any

import pluggy

from evsys.schema import hookspecs
from evsys.schema.errors import PluginError
from evsys.schema.hookspecs import HOOK_NAME, PROJECT_NAME, hookimpl
from evsys.schema.registry import BrokenPlugin, PluginRegistry, Registrar, Registration

__all__ = [
    "DISABLE_AUTOLOAD_ENV",
    "ENTRY_POINT_GROUP",
    "build_registry",
    "default_registry",
    "hookimpl",
    "register_in_process",
    "reset_default_registry",
]

ENTRY_POINT_GROUP = "evsys"
DISABLE_AUTOLOAD_ENV = "EVSYS_DISABLE_PLUGIN_AUTOLOAD"

_IN_PROCESS: list[Registration] = []


def _autoload_disabled() -> bool:
    return os.environ.get(DISABLE_AUTOLOAD_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def build_registry(
    plugins: Iterable[tuple[str, Any]] = (),
    *,
    autoload: bool | None = None,
    in_process: bool = True,
) -> PluginRegistry:
    """Build a registry from entry points (unless disabled) plus ``plugins`` given as ``(distribution, module)``.

    ``in_process=False`` leaves out the registrations made in this process (:func:`register_in_process`).
    A plugin that registers one name twice or a malformed target is broken (listed in ``registry.broken``,
    none of its names registered); two plugins registering one name both stay, as ``distribution:name``.
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
        unknown = sorted(caller.name for caller in manager.get_hookcallers(module) or [] if caller.spec is None)
        if unknown:
            manager.unregister(module)
            registry.broken.append(BrokenPlugin(name, distribution, version, _unknown_hooks_message(unknown)))
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

    for impl in reversed(getattr(manager.hook, HOOK_NAME).get_hookimpls()):
        distribution, version = origin.get(id(impl.plugin), (impl.plugin_name, ""))
        registrar = Registrar(distribution, version)
        try:
            impl.function(register=registrar)
            registry.add_all(registrar.registrations)
        except Exception as exc:  # a hook that raises marks its plugin broken; none of its names count
            error = str(exc) if isinstance(exc, PluginError) else f"{HOOK_NAME}: {type(exc).__name__}: {exc}"
            registry.broken.append(BrokenPlugin(impl.plugin_name, distribution, version, error))
    for registration in _IN_PROCESS if in_process else ():
        registry.add(registration)
    return registry


def _unknown_hooks_message(hooks: list[str]) -> str:
    names = ", ".join(hooks)
    return (
        f"defines {names}, not an EvSys hook: register every kind in one "
        f"`@hookimpl def {HOOK_NAME}(register)` (register.algorithm(...), register.callback(...); see docs/plugins.md)"
    )


def register_in_process(registration: Registration) -> None:
    """Add a registration made in this process (``registration.loaded`` holds the object) to every
    registry built from now on and to the process-wide one; the same name twice raises :class:`PluginError`."""
    for earlier in _IN_PROCESS:
        if (earlier.kind, earlier.name) == (registration.kind, registration.name):
            if earlier.loaded is registration.loaded:
                return
            raise PluginError(f"{registration.label} is registered twice in this process")
    _IN_PROCESS.append(registration)
    if _DEFAULT is not None:
        _DEFAULT.add(registration)


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
