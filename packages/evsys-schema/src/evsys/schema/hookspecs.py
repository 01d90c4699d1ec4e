"""The pluggy hook specifications of EvSys (project name ``evsys``, entry-point group ``evsys``).

A plugin is a module with functions marked ``@hookimpl`` and named as below; each is handed a
typed registrar and registers names with lazy ``"module:attr"`` targets::

    from evsys.schema.plugins import hookimpl

    @hookimpl
    def evsys_register_verifiers(registry):
        registry.register_function("starts_with", "my_pkg.verify:starts_with")
"""

from __future__ import annotations

import pluggy

from evsys.schema.registry import (
    AlgorithmRegistrar,
    BackendRegistrar,
    CallbackRegistrar,
    MetricRegistrar,
    SourceRegistrar,
    TransformRegistrar,
    VerifierRegistrar,
)

PROJECT_NAME = "evsys"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def evsys_register_algorithms(registry: AlgorithmRegistrar) -> None:
    """Register post-training algorithms (``algorithm.kind``)."""


@hookspec
def evsys_register_backends(registry: BackendRegistrar) -> None:
    """Register training backends (``backend.kind``)."""


@hookspec
def evsys_register_verifiers(registry: VerifierRegistrar) -> None:
    """Register verifier kinds (``verifier.kind``) and in-process functions (``verifier.fn_name``)."""


@hookspec
def evsys_register_transforms(registry: TransformRegistrar) -> None:
    """Register data transforms (``data.transform``)."""


@hookspec
def evsys_register_callbacks(registry: CallbackRegistrar) -> None:
    """Register run callbacks (``callbacks[].kind``)."""


@hookspec
def evsys_register_sources(registry: SourceRegistrar) -> None:
    """Register data sources (``data.source_kind``)."""


@hookspec
def evsys_register_metrics(registry: MetricRegistrar) -> None:
    """Register benchmark metrics (``metadata.benchmark[].metrics``)."""
