"""Registrations of plugins by kind, and the typed registrars each hook is handed.

A registration names a plugin, its params model and a lazy ``"module:attr"`` path to the
implementation, so validating a config never imports torch.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel

from evsys.schema.errors import PluginError, Problem, UnknownNameError
from evsys.schema.suggest import did_you_mean

KINDS: tuple[str, ...] = (
    "algorithm",
    "backend",
    "verifier",
    "verifier_function",
    "transform",
    "callback",
    "source",
    "metric",
)
#: ``pass@4`` -> family ``pass@k``; ``pass^4`` -> family ``pass^k``
_METRIC_FAMILY = re.compile(r"^(?P<prefix>[A-Za-z_][A-Za-z0-9_]*)(?P<sep>[@^])(?P<k>[1-9][0-9]*)$")


def metric_family(name: str) -> tuple[str, int] | None:
    """``"pass@4"`` -> ``("pass@k", 4)``; None for a name that is not ``prefix@N`` or ``prefix^N``."""
    match = _METRIC_FAMILY.match(name)
    if match is None:
        return None
    return f"{match.group('prefix')}{match.group('sep')}k", int(match.group("k"))


def load_object(target: str) -> Any:
    """Import ``"package.module:attr.sub"`` and return the attribute."""
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


def module_installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class Registration:
    """One registered plugin object of a kind."""

    kind: str
    name: str
    target: str
    distribution: str
    version: str = ""
    params: type[BaseModel] | None = None
    description: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)

    def missing_requirement(self) -> str | None:
        """One line naming the ``meta['requires']`` modules that are not installed and how to get them, or None.

        Checked with :func:`importlib.util.find_spec`: nothing is imported.
        """
        missing = [name for name in self.meta.get("requires", ()) if not module_installed(name)]
        if not missing:
            return None
        hint = self.meta.get("install_hint") or f"install {', '.join(missing)}"
        return f"{self.kind} '{self.name}' needs {', '.join(missing)}, not installed: {hint}"

    def load(self) -> Any:
        """Import the implementation; a failure raises :class:`PluginError` naming the plugin and the cause."""
        try:
            return load_object(self.target)
        except Exception as exc:  # any import failure is the plugin's, reported as one line
            hint = self.meta.get("install_hint")
            suffix = f"; {hint}" if hint else ""
            raise PluginError(
                f"cannot load {self.kind} '{self.name}' from {self.distribution} ({self.target}): "
                f"{type(exc).__name__}: {exc}{suffix}"
            ) from None


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin that failed to import or to register."""

    name: str
    distribution: str
    version: str
    error: str


class PluginRegistry:
    """Every registration, by kind and name, plus the plugins that failed to load."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Registration]] = {kind: {} for kind in KINDS}
        self.broken: list[BrokenPlugin] = []

    def add(self, registration: Registration) -> None:
        """Add a registration; a name already taken raises :class:`PluginError` naming both distributions."""
        table = self._entries.setdefault(registration.kind, {})
        existing = table.get(registration.name)
        if existing is not None:
            raise PluginError(
                f"{registration.kind} '{registration.name}' is registered twice: by {existing.distribution} "
                f"and by {registration.distribution}"
            )
        table[registration.name] = registration

    def names(self, kind: str) -> list[str]:
        """Registered names of ``kind``, sorted."""
        return sorted(self._entries.get(kind, {}))

    def registrations(self, kind: str | None = None) -> list[Registration]:
        """Registrations of one kind, or all of them."""
        kinds = [kind] if kind else list(self._entries)
        return [self._entries[k][n] for k in kinds for n in sorted(self._entries.get(k, {}))]

    def find(self, kind: str, name: str) -> Registration | None:
        """The registration, or None. Metric names like ``pass@4`` resolve to the family ``pass@k``."""
        table = self._entries.get(kind, {})
        if name in table:
            return table[name]
        if kind == "metric":
            family = metric_family(name)
            if family is not None:
                return table.get(family[0])
        return None

    def get(self, kind: str, name: str) -> Registration:
        """The registration, or :class:`UnknownNameError` listing what is registered."""
        found = self.find(kind, name)
        if found is not None:
            return found
        known = self.names(kind)
        label = kind.replace("_", " ")
        hint = did_you_mean(name, known)
        listing = ", ".join(known) if known else "none"
        broken = [b for b in self.broken]
        extra = ""
        if broken:
            extra = "; broken plugins: " + ", ".join(f"{b.distribution} ({b.error})" for b in broken)
        raise UnknownNameError(Problem(f"unknown {label} '{name}'{hint}; registered: {listing}{extra}"))


class Registrar:
    """Handed to a registration hook; records what one distribution registers."""

    kind: ClassVar[str] = ""

    def __init__(self, registry: PluginRegistry, distribution: str, version: str = "") -> None:
        self._registry = registry
        self.distribution = distribution
        self.version = version

    def _add(self, kind: str, name: str, target: str, params: type[BaseModel] | None, description: str, **meta: Any) -> None:
        if ":" not in target:
            raise PluginError(f"{self.distribution}: {kind} '{name}' target must be 'module:attr', got '{target}'")
        self._registry.add(
            Registration(
                kind=kind,
                name=name,
                target=target,
                distribution=self.distribution,
                version=self.version,
                params=params,
                description=description,
                meta=meta,
            )
        )


class AlgorithmRegistrar(Registrar):
    """Registers algorithms."""

    kind = "algorithm"

    def register(
        self,
        name: str,
        target: str,
        *,
        params: type[BaseModel],
        row_models: tuple[type[BaseModel], ...],
        templates: Mapping[str, frozenset[str]] | None = None,
        description: str = "",
    ) -> None:
        """Register algorithm ``name``.

        ``target`` is ``"module:Class"``, built as ``Class(params, backend, context)``; ``params`` its
        params model (extend :class:`evsys.schema.params.TrainingParams`); ``row_models`` the data
        rows it accepts (the first that validates wins); ``templates`` maps a params field holding a
        ``str.format`` template to the placeholder names it may use beyond the row's ``inputs``.
        """
        self._add(self.kind, name, target, params, description, row_models=row_models, templates=dict(templates or {}))


class BackendRegistrar(Registrar):
    """Registers backends."""

    kind = "backend"

    def register(
        self,
        name: str,
        target: str,
        *,
        params: type[BaseModel],
        requires: tuple[str, ...] = (),
        install_hint: str = "",
        checker: str | None = None,
        prompt_checker: str | None = None,
        description: str = "",
    ) -> None:
        """Register backend ``name``.

        ``target`` is ``"module:Class"``, built as ``Class(setup, params)``. ``requires`` lists modules
        that must be importable (checked by ``validate --deep`` without importing them), ``install_hint``
        says how to get them, and ``checker`` is a light ``"module:function"`` taking
        ``(model_name, params)`` and returning a list of :class:`~evsys.schema.errors.Problem`.
        ``prompt_checker`` (optional, light, no torch in the calling process) takes ``(model_name, params,
        prompts, trained, max_new_tokens)`` — the run's generation prompts by kind and its trained chats —
        and returns ``(problems, summary or None)``; ``validate --deep`` runs it on valid data.
        """
        self._add(
            self.kind,
            name,
            target,
            params,
            description,
            requires=requires,
            install_hint=install_hint,
            checker=checker,
            prompt_checker=prompt_checker,
        )


class VerifierRegistrar(Registrar):
    """Registers verifier kinds and in-process verifier functions."""

    kind = "verifier"

    def register(self, name: str, target: str, *, params: type[BaseModel] | None = None, description: str = "") -> None:
        """Register verifier kind ``name``; ``target`` builds a verifier from a task's ``VerifierSpec``."""
        self._add(self.kind, name, target, params, description)

    def register_function(
        self, name: str, target: str, *, params: type[BaseModel] | None = None, description: str = ""
    ) -> None:
        """Register an in-process verifier function ``(output, expected, **options) -> float`` as ``fn_name``."""
        self._add("verifier_function", name, target, params, description)


class TransformRegistrar(Registrar):
    """Registers data transforms (raw row -> example row)."""

    kind = "transform"

    def register(self, name: str, target: str, *, description: str = "") -> None:
        """Register transform ``name``; ``target`` is a function ``(row: dict) -> dict | None``."""
        self._add(self.kind, name, target, None, description)


class CallbackRegistrar(Registrar):
    """Registers callbacks."""

    kind = "callback"

    def register(
        self,
        name: str,
        target: str,
        *,
        params: type[BaseModel],
        requires: tuple[str, ...] = (),
        install_hint: str = "",
        description: str = "",
    ) -> None:
        """Register callback ``name``; ``target`` is a class built as ``Class(params)``.

        ``requires`` lists modules the callback imports when it runs (checked by ``validate --deep``
        and before ``evsys run`` loads the model, without importing them); ``install_hint`` says how
        to get them, e.g. ``pip install 'evsys-logging[tensorboard]'``.
        """
        self._add(self.kind, name, target, params, description, requires=requires, install_hint=install_hint)


class SourceRegistrar(Registrar):
    """Registers data sources (``data.source_kind``)."""

    kind = "source"

    def register(self, name: str, target: str, *, description: str = "") -> None:
        """Register source ``name``; ``target`` is a function ``(path) -> Iterator[(line, row | error)]``."""
        self._add(self.kind, name, target, None, description)


class MetricRegistrar(Registrar):
    """Registers benchmark metrics; a name ``prefix@k`` (or ``prefix^k``) registers the family ``prefix@1``, ``prefix@2``, ..."""

    kind = "metric"

    def register(self, name: str, target: str, *, description: str = "") -> None:
        """Register metric ``name``; ``target`` computes it from per-task sample scores."""
        self._add(self.kind, name, target, None, description)
