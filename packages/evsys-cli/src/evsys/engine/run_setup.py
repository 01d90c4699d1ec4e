"""Setting up a run before training: the training data, the backend, the callbacks and ``--dry-run``.

Each piece is reached through the plugin registry; a user mistake is a :class:`ConfigError` naming
the config field, raised before the model loads. :func:`announce` tells the console what is happening.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from evsys.data.examples import load_examples, source_options
from evsys.schema.errors import ConfigError, Location, Problem
from evsys.schema.params import TrainingParams
from evsys.schema.protocols import Algorithm, Backend, BackendSetup, Callback, missing_members
from evsys.schema.registry import PluginRegistry
from evsys.schema.validation import ValidatedConfig

__all__ = [
    "DRY_RUN_REPORT",
    "announce",
    "build_backend",
    "build_callbacks",
    "check_dry_run",
    "kind_error",
    "load_plugin_class",
    "load_training_examples",
    "plural",
    "template_checks",
    "training_params",
]


def plural(count: int, noun: str) -> str:
    """``1 step``, ``2 steps``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def kind_error(validated: ValidatedConfig, section: str, message: str) -> ConfigError:
    """The one-line error about the config's ``<section>.kind`` (``algorithm``, ``backend``), located in its file."""
    return ConfigError(Problem(message, validated.document.locate((section, "kind")), field=f"{section}.kind"))


def training_params(validated: ValidatedConfig) -> TrainingParams:
    """The algorithm's params, which the run loop and the backend read (seed, batch size, steps, LoRA).

    An algorithm's params model extends :class:`~evsys.schema.params.TrainingParams`; one that does
    not is the plugin's mistake, named here before anything loads.
    """
    params = validated.algorithm_params
    if not isinstance(params, TrainingParams):
        kind = validated.config.algorithm.kind
        raise kind_error(
            validated,
            "algorithm",
            f"algorithm '{kind}' declares params {type(params).__name__}, which does not extend "
            "evsys.schema.params.TrainingParams (the run needs its seed, batch_size, max_steps and lora_rank)",
        )
    return params


_BASE_OF = {"algorithm": "evsys.schema.plugin_bases.BaseAlgorithm", "backend": "evsys.schema.plugin_bases.BaseBackend"}


def load_plugin_class(validated: ValidatedConfig, registry: PluginRegistry, kind: str) -> type[Any]:
    """The configured algorithm's or backend's class (imported now), checked against its protocol:
    a class lacking a declared member is the plugin's mistake, one line at ``<kind>.kind``."""
    name = validated.config.algorithm.kind if kind == "algorithm" else validated.config.backend.kind
    registration = registry.get(kind, name)
    loaded = registration.load()
    protocol = Algorithm if kind == "algorithm" else Backend
    missing = missing_members(loaded, protocol)
    if missing:
        raise kind_error(
            validated,
            kind,
            f"{kind} '{name}' of {registration.distribution} ({registration.target}) lacks {', '.join(missing)} "
            f"of the {protocol.__name__} protocol: subclass {_BASE_OF[kind]}",
        )
    return loaded


def template_checks(validated: ValidatedConfig, registry: PluginRegistry) -> dict[str, frozenset[str]]:
    """The algorithm's templates (the params fields its registration names, with the extra names each
    may use) as ``{template text: allowed extra names}``."""
    registration = registry.get("algorithm", validated.config.algorithm.kind)
    templates = dict(registration.meta.get("templates", {}))
    values = validated.algorithm_params.model_dump(include=set(templates))
    return {values[name]: frozenset(extra) for name, extra in templates.items() if isinstance(values.get(name), str)}


def load_training_examples(validated: ValidatedConfig, registry: PluginRegistry) -> list[BaseModel]:
    """Every training example, validated for the chosen algorithm (all bad rows reported at once)."""
    config = validated.config
    registration = registry.get("algorithm", config.algorithm.kind)
    return load_examples(
        config.data.path,
        tuple(registration.meta.get("row_models", ())),
        options=source_options(config.data),
        templates=template_checks(validated, registry),
        registry=registry,
        algorithm=config.algorithm.kind,
    )


def announce(callbacks: Sequence[Callback], text: str) -> None:
    """Tell the callbacks (the console prints it) what the run is doing now, one line."""
    for callback in callbacks:
        callback.on_phase(text)

DRY_RUN_REPORT = "dry_run.md"
"""The file a backend's dry run leaves in the run directory: its summary of requests and tokens."""


def check_dry_run(validated: ValidatedConfig, registry: PluginRegistry) -> None:
    """Refuse ``--dry-run`` with one line when the config's backend has no simulation (no ``supports_dry_run``)."""
    config = validated.config
    backend_class = load_plugin_class(validated, registry, "backend")
    if not backend_class.supports_dry_run:
        raise kind_error(
            validated,
            "backend",
            f"--dry-run simulates a remote service, and backend '{config.backend.kind}' has none to simulate: "
            "check the config with `evsys validate --deep`, or run it for real with max_steps: 1",
        )


def build_backend(validated: ValidatedConfig, registry: PluginRegistry, run_dir: Path, *, dry_run: bool = False) -> Backend:
    """Construct the configured backend (imports its implementation only now).

    ``dry_run``: the backend runs against its simulation (:func:`check_dry_run` refuses one without).
    """
    config = validated.config
    params = training_params(validated)
    if dry_run:
        check_dry_run(validated, registry)
    backend_class = load_plugin_class(validated, registry, "backend")
    setup = BackendSetup(
        model_name=config.model.name,
        lora_rank=params.lora_rank,
        lora_alpha=params.lora_alpha,
        seed=params.seed,
        model_revision=config.model.revision,
        run_dir=run_dir,
        dry_run=dry_run,
    )
    return backend_class(setup, validated.backend_params)


def build_callbacks(validated: ValidatedConfig, registry: PluginRegistry, extra: Sequence[Callback] = ()) -> list[Callback]:
    """Construct the configured callbacks, then ``extra`` ones (e.g. the CLI's console progress).

    A callback whose optional dependency is missing (a tracker's library) is a :class:`ConfigError`
    at its ``callbacks[i].kind``, before anything is imported.
    """
    registrations = [registry.get("callback", spec.kind) for spec in validated.config.callbacks]
    missing = [
        Problem(message, validated.document.locate(("callbacks", index, "kind")), f"callbacks[{index}].kind")
        for index, registration in enumerate(registrations)
        if (message := registration.missing_requirement())
    ]
    if missing:
        raise ConfigError(missing)
    built: list[Callback] = []
    for registration, params in zip(registrations, validated.callback_params, strict=True):
        built.append(registration.load()(params))
    built.extend(extra)
    return built


def check_callback_object(callback: object) -> None:
    """A callback handed to ``run(callbacks=...)`` must have every method of the Callback protocol."""
    missing = missing_members(callback, Callback)
    if missing:
        raise ConfigError(
            Problem(
                f"callback {type(callback).__name__} lacks {', '.join(missing)} of the Callback protocol: "
                "subclass evsys.schema.protocols.BaseCallback",
                Location("run(callbacks=...)"),
            )
        )
