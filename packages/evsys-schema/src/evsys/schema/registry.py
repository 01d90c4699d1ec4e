"""Registrations of plugins by kind, and the :class:`Registrar` the ``evsys_register`` hook is handed.

A registration names a plugin, its params model and a lazy ``"module:attr"`` path to the
implementation, so validating a config never imports torch. Two plugins may register the same
name: each stays reachable as ``distribution:name`` and the bare name asks which one.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from evsys.schema.errors import PluginError, Problem, UnknownNameError
from evsys.schema.rows import ChatPromptExample, PromptExample
from evsys.schema.suggest import did_you_mean
from evsys.schema.targets import target_problem

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


def canonical_distribution(name: str) -> str:
    """A distribution name as ``pip`` compares them: ``Evsys_Acme`` -> ``evsys-acme``."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Registration:
    """One registered plugin object of a kind.

    ``loaded`` holds the object itself for a registration made in this process (a decorator's),
    which :meth:`load` returns without importing ``target``.
    """

    kind: str
    name: str
    target: str
    distribution: str
    version: str = ""
    params: type[BaseModel] | None = None
    description: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)
    loaded: Any = field(default=None, compare=False, repr=False)

    @property
    def qualified_name(self) -> str:
        """``distribution:name``, the name that stays unique when two plugins register ``name``."""
        return f"{self.distribution}:{self.name}"

    @property
    def label(self) -> str:
        """``algorithm 'my_algo'`` (kinds with an underscore read as words)."""
        return f"{self.kind.replace('_', ' ')} '{self.name}'"

    def missing_requirement(self) -> str | None:
        """One line naming the ``meta['requires']`` modules that are not installed and how to get them, or None.

        Checked with :func:`importlib.util.find_spec`: nothing is imported.
        """
        missing = [name for name in self.meta.get("requires", ()) if not module_installed(name)]
        if not missing:
            return None
        hint = self.meta.get("install_hint") or f"install {', '.join(missing)}"
        return f"{self.kind} '{self.name}' needs {', '.join(missing)}, not installed: {hint}"

    def target_problem(self) -> str | None:
        """One line naming the plugin and its target when the target's module or attribute is missing, else None.

        Checked without importing the target's module (see :mod:`evsys.schema.targets`).
        """
        if self.loaded is not None:
            return None
        problem = target_problem(self.target)
        if problem is None:
            return None
        return f"{self.label} of plugin {self.distribution} has a broken target {self.target}: {problem}"

    def load(self) -> Any:
        """Import the implementation; a failure raises :class:`PluginError` naming the plugin and the cause."""
        if self.loaded is not None:
            return self.loaded
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
    """Every registration, by kind and name, plus the plugins that failed to load.

    A name registered by two distributions is reachable only as ``distribution:name``; the bare
    name then fails with a message naming both.
    """

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, list[Registration]]] = {kind: {} for kind in KINDS}
        self.broken: list[BrokenPlugin] = []

    def add(self, registration: Registration) -> None:
        """Add a registration; a distribution registering one name twice raises :class:`PluginError`."""
        self.add_all([registration])

    def add_all(self, registrations: list[Registration]) -> None:
        """Add registrations all or none; a distribution registering one name twice raises :class:`PluginError`."""
        seen: set[tuple[str, str, str]] = set()
        for r in registrations:
            key = (r.kind, r.name, r.distribution)
            if key in seen or any(o.distribution == r.distribution for o in self._entries.get(r.kind, {}).get(r.name, [])):
                raise PluginError(f"{r.distribution}: {r.label} is registered twice")
            seen.add(key)
        for r in registrations:
            self._entries.setdefault(r.kind, {}).setdefault(r.name, []).append(r)

    def names(self, kind: str) -> list[str]:
        """The names a config may use for ``kind``, sorted: bare when unique, ``distribution:name`` when two plugins share one."""
        return sorted(self.name_of(r) for r in self.registrations(kind))

    def name_of(self, registration: Registration) -> str:
        """The name a config uses for ``registration``: its own, or ``distribution:name`` when another plugin shares it."""
        shared = len(self._entries.get(registration.kind, {}).get(registration.name, [])) > 1
        return registration.qualified_name if shared else registration.name

    def registrations(self, kind: str | None = None) -> list[Registration]:
        """Registrations of one kind, or all of them."""
        kinds = [kind] if kind else list(self._entries)
        table = self._entries
        return [r for k in kinds for n in sorted(table.get(k, {})) for r in table[k][n]]

    def find(self, kind: str, name: str) -> Registration | None:
        """The registration, or None when nothing or more than one plugin answers to ``name``.

        ``distribution:name`` picks one plugin's; metric names like ``pass@4`` resolve to the family ``pass@k``.
        """
        found = self.candidates(kind, name)
        return found[0] if len(found) == 1 else None

    def candidates(self, kind: str, name: str) -> list[Registration]:
        """Every registration ``name`` could mean: one, none, or several when plugins share a bare name."""
        table = self._entries.get(kind, {})
        distribution, sep, bare = name.rpartition(":")
        if sep:
            wanted = canonical_distribution(distribution)
            return [r for r in table.get(bare, []) if canonical_distribution(r.distribution) == wanted]
        if name in table:
            return table[name]
        if kind == "metric":
            family = metric_family(name)
            if family is not None:
                return table.get(family[0], [])
        return []

    def missing_message(self, kind: str, name: str) -> str:
        """Why :meth:`find` found nothing: the plugins that share ``name``, or what is registered (with a hint)."""
        label = kind.replace("_", " ")
        shared = sorted(self.candidates(kind, name), key=lambda r: r.distribution)
        if len(shared) > 1:
            choices = " or ".join(f"'{r.qualified_name}'" for r in shared)
            owners = " and ".join(r.distribution for r in shared)
            return f"{label} '{name}' is registered by {owners}: name one as {choices}"
        known = self.names(kind)
        message = f"unknown {label} '{name}'{did_you_mean(name, known)}; registered: {', '.join(known) or 'none'}"
        if self.broken:
            message += f"; broken plugins (see `evsys plugins`): {', '.join(b.distribution for b in self.broken)}"
        return message

    def get(self, kind: str, name: str) -> Registration:
        """The registration, or :class:`UnknownNameError` saying what is registered or which plugins share the name."""
        found = self.find(kind, name)
        if found is not None:
            return found
        raise UnknownNameError(Problem(self.missing_message(kind, name)))


M = TypeVar("M")
_KIND_METHODS: list[str] = []


def _kind(method: M) -> M:
    """Mark a :class:`Registrar` method as registering the kind it is named after."""
    _KIND_METHODS.append(method.__name__)  # type: ignore[attr-defined]
    return method


def _default_templates(params: type[BaseModel]) -> dict[str, frozenset[str]]:
    return {name: frozenset() for name in params.model_fields if name.endswith("_template")}


class Registrar:
    """Handed to a plugin's ``evsys_register(register)`` hook: one method per kind, each taking a name
    and a lazy ``"module:attr"`` target. A new kind is one more method marked ``@_kind``."""

    def __init__(self, distribution: str, version: str = "") -> None:
        self.distribution = distribution
        self.version = version
        #: what the hook registered, added to the registry once the hook returns
        self.registrations: list[Registration] = []

    def _add(self, kind: str, name: str, target: str, params: type[BaseModel] | None, description: str, **meta: Any) -> None:
        if ":" not in target:
            raise PluginError(f"{self.distribution}: {kind} '{name}' target must be 'module:attr', got '{target}'")
        self.registrations.append(Registration(kind, name, target, self.distribution, self.version, params, description, meta))

    @_kind
    def algorithm(
        self,
        name: str,
        target: str,
        *,
        params: type[BaseModel],
        row_models: tuple[type[BaseModel], ...] = (PromptExample, ChatPromptExample),
        templates: Mapping[str, frozenset[str]] | None = None,
        description: str = "",
    ) -> None:
        """Register algorithm ``name`` (``algorithm.kind``).

        ``target`` is ``"module:Class"``, built as ``Class(params, backend, context)``; ``params`` its
        params model (extend :class:`evsys.schema.params.TrainingParams`); ``row_models`` the data
        rows it accepts (the first that validates wins; default: prompts with a gold answer, plain or
        chat); ``templates`` maps a params field holding a ``str.format`` template to the placeholder
        names it may use beyond the row's ``inputs`` (default: every ``*_template`` field, none extra).
        """
        templates = _default_templates(params) if templates is None else dict(templates)
        self._add("algorithm", name, target, params, description, row_models=row_models, templates=templates)

    @_kind
    def backend(
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
        """Register backend ``name`` (``backend.kind``).

        ``target`` is ``"module:Class"``, built as ``Class(setup, params)``. ``requires`` lists modules
        that must be importable (checked by ``validate --deep`` without importing them), ``install_hint``
        says how to get them, and ``checker`` is a light ``"module:function"`` taking
        ``(model_name, params)`` and returning a list of :class:`~evsys.schema.errors.Problem`.
        ``prompt_checker`` (optional, light, no torch in the calling process) takes ``(model_name, params,
        prompts, trained, max_new_tokens)`` — the run's generation prompts by kind and its trained chats —
        and returns ``(problems, summary or None)``; ``validate --deep`` runs it on valid data.
        """
        meta = {"requires": requires, "install_hint": install_hint, "checker": checker, "prompt_checker": prompt_checker}
        self._add("backend", name, target, params, description, **meta)

    @_kind
    def verifier(self, name: str, target: str, *, params: type[BaseModel] | None = None, description: str = "") -> None:
        """Register verifier kind ``name`` (``verifier.kind``); ``target`` builds a verifier from a task's ``VerifierSpec``."""
        self._add("verifier", name, target, params, description)

    @_kind
    def verifier_function(self, name: str, target: str, *, params: type[BaseModel] | None = None, description: str = "") -> None:
        """Register an in-process verifier function ``(output, expected, **options) -> float`` (``verifier.fn_name``)."""
        self._add("verifier_function", name, target, params, description)

    @_kind
    def transform(self, name: str, target: str, *, description: str = "") -> None:
        """Register data transform ``name`` (``data.transform``); ``target`` is a function ``(row: dict) -> dict | None``."""
        self._add("transform", name, target, None, description)

    @_kind
    def callback(
        self,
        name: str,
        target: str,
        *,
        params: type[BaseModel] | None = None,
        requires: tuple[str, ...] = (),
        install_hint: str = "",
        description: str = "",
    ) -> None:
        """Register callback ``name`` (``callbacks[].kind``); ``target`` is a class built as ``Class(params)``.

        ``requires`` lists modules the callback imports when it runs (checked by ``validate --deep``
        and before ``evsys run`` loads the model, without importing them); ``install_hint`` says how
        to get them, e.g. ``pip install 'evsys-logging[tensorboard]'``.
        """
        self._add("callback", name, target, params, description, requires=requires, install_hint=install_hint)

    @_kind
    def source(self, name: str, target: str, *, description: str = "") -> None:
        """Register data source ``name`` (``data.source_kind``); ``target`` is a function ``(path) -> Iterator[(line, row | error)]``."""
        self._add("source", name, target, None, description)

    @_kind
    def metric(self, name: str, target: str, *, description: str = "") -> None:
        """Register benchmark metric ``name`` (``metadata.benchmark[].metrics``); ``target`` computes it from
        per-task sample scores. A name ``prefix@k`` (or ``prefix^k``) registers the family ``prefix@1``, ``prefix@2``, ..."""
        self._add("metric", name, target, None, description)


#: every kind a plugin can register, one per :class:`Registrar` method
KINDS: tuple[str, ...] = tuple(_KIND_METHODS)
