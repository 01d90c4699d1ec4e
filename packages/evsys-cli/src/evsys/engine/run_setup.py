"""Setting up a run before training: the training data, the backend, the callbacks and ``--dry-run``.

Each piece is reached through the plugin registry; a user mistake is a :class:`ConfigError` naming
the config field, raised before the model loads. :func:`announce` tells the console what is happening.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel

from evsys.data.examples import load_examples, source_options
from evsys.schema.errors import ConfigError, Problem
from evsys.schema.protocols import Backend, BackendSetup, Callback
from evsys.schema.registry import PluginRegistry
from evsys.schema.validation import ValidatedConfig

__all__ = [
    "DRY_RUN_REPORT",
    "DRY_RUN_SUFFIX",
    "announce",
    "build_backend",
    "build_callbacks",
    "check_dry_run",
    "load_training_examples",
    "plural",
    "template_checks",
]


def plural(count: int, noun: str) -> str:
    """``1 step``, ``2 steps``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def template_checks(validated: ValidatedConfig, registry: PluginRegistry) -> dict[str, frozenset[str]]:
    """The algorithm's templates (params field -> extra names) as ``{template text: allowed extra names}``."""
    registration = registry.get("algorithm", validated.config.algorithm.kind)
    checks: dict[str, frozenset[str]] = {}
    for field_name, extra in registration.meta.get("templates", {}).items():
        text = getattr(validated.algorithm_params, field_name, None)
        resolve = getattr(validated.algorithm_params, f"resolved_{field_name}", None)
        if callable(resolve):
            text = resolve()
        if isinstance(text, str):
            checks[text] = frozenset(extra)
    return checks


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
    """Tell the callbacks that have ``on_phase`` (the console) what the run is doing now, one line.

    ``on_phase(text)`` is optional, like ``eval_started``; it is not part of the Callback protocol.
    """
    for callback in callbacks:
        say = getattr(callback, "on_phase", None)
        if callable(say):
            say(text)


DRY_RUN_SUFFIX = "-dry-run"
"""``--dry-run`` writes to ``<output_dir>/<name>-dry-run`` (replaced each time), never the real run's directory."""
DRY_RUN_REPORT = "dry_run.md"
"""The file a backend's dry run leaves in the run directory: its summary of requests and tokens."""


def check_dry_run(validated: ValidatedConfig, registry: PluginRegistry) -> None:
    """Refuse ``--dry-run`` with one line when the config's backend has no simulation (no ``supports_dry_run``)."""
    config = validated.config
    backend_class = registry.get("backend", config.backend.kind).load()
    if not getattr(backend_class, "supports_dry_run", False):
        raise ConfigError(
            Problem(
                f"--dry-run simulates a remote service, and backend '{config.backend.kind}' has none to simulate: "
                "check the config with `evsys validate --deep`, or run it for real with max_steps: 1",
                validated.document.locate(("backend", "kind")),
                field="backend.kind",
            )
        )


def build_backend(validated: ValidatedConfig, registry: PluginRegistry, run_dir: Path, *, dry_run: bool = False) -> Backend:
    """Construct the configured backend (imports its implementation only now).

    ``dry_run``: the backend runs against its simulation (:func:`check_dry_run` refuses one without).
    """
    config = validated.config
    params = validated.algorithm_params
    if dry_run:
        check_dry_run(validated, registry)
    backend_class = registry.get("backend", config.backend.kind).load()
    setup = BackendSetup(
        model_name=config.model.name,
        lora_rank=int(getattr(params, "lora_rank", 8)),
        seed=int(getattr(params, "seed", 0)),
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
