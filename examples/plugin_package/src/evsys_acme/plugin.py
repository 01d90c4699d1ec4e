"""The entry point ``acme = "evsys_acme.plugin"``: one hook registering everything this package adds.

Importing this module must stay cheap (``evsys validate`` and ``evsys plugins`` import it): every
target is a lazy ``"module:attr"`` string, and only params models are imported here.
"""

from __future__ import annotations

from evsys.schema.plugins import hookimpl
from evsys.schema.registry import Registrar
from evsys_acme.params import EventLogParams


@hookimpl
def evsys_register(register: Registrar) -> None:
    """``fn_name: acme_starts_with`` in a tasks.jsonl, ``data.transform: acme_qa_pairs`` and
    ``callbacks: [{kind: acme_event_log}]`` in a run config."""
    register.verifier_function(
        "acme_starts_with",
        "evsys_acme.verifiers:starts_with",
        description="The answer starts with the expected text (case-insensitive unless ignore_case: false).",
    )
    register.transform("acme_qa_pairs", "evsys_acme.transforms:qa_pairs", description="{q, a} rows -> PromptExample rows.")
    register.callback(
        "acme_event_log",
        "evsys_acme.callbacks:EventLog",
        params=EventLogParams,
        description="Every run event as one JSON line in <run_dir>/events.jsonl.",
    )
