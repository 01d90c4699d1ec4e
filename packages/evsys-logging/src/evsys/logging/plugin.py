"""Registers the built-in callbacks ``local_logger`` and ``console``."""

from __future__ import annotations

from evsys.logging.params import ConsoleParams, LocalLoggerParams
from evsys.schema.plugins import hookimpl
from evsys.schema.registry import CallbackRegistrar


@hookimpl
def evsys_register_callbacks(registry: CallbackRegistrar) -> None:
    """Register ``local_logger`` and ``console``."""
    registry.register(
        "local_logger",
        "evsys.logging.local:LocalLogger",
        params=LocalLoggerParams,
        description="metrics.jsonl, predictions/<benchmark>.jsonl and summary.md in the run directory.",
    )
    registry.register(
        "console",
        "evsys.logging.console:ConsoleProgress",
        params=ConsoleParams,
        description="A progress line per step on stderr.",
    )
