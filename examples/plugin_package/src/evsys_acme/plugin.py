"""The entry point ``acme = "evsys_acme.plugin"``: one hook per kind this package adds.

Importing this module must stay cheap (``evsys validate`` and ``evsys plugins`` import it): every
target is a lazy ``"module:attr"`` string, and only params models are imported here.
"""

from __future__ import annotations

from evsys.schema.plugins import hookimpl
from evsys.schema.registry import CallbackRegistrar, TransformRegistrar, VerifierRegistrar
from evsys_acme.params import EventLogParams


@hookimpl
def evsys_register_verifiers(registry: VerifierRegistrar) -> None:
    """``verifier: {kind: in_process, fn_name: acme_starts_with}`` in a tasks.jsonl."""
    registry.register_function(
        "acme_starts_with",
        "evsys_acme.verifiers:starts_with",
        description="The answer starts with the expected text (case-insensitive unless ignore_case: false).",
    )


@hookimpl
def evsys_register_transforms(registry: TransformRegistrar) -> None:
    """``data.transform: acme_qa_pairs`` in a run config."""
    registry.register("acme_qa_pairs", "evsys_acme.transforms:qa_pairs", description="{q, a} rows -> PromptExample rows.")


@hookimpl
def evsys_register_callbacks(registry: CallbackRegistrar) -> None:
    """``callbacks: [{kind: acme_event_log}]`` in a run config."""
    registry.register(
        "acme_event_log",
        "evsys_acme.callbacks:EventLog",
        params=EventLogParams,
        description="Every run event as one JSON line in <run_dir>/events.jsonl.",
    )
