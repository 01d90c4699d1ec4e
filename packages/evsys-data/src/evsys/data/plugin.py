"""Registers the built-in data sources ``jsonl`` and ``hf``."""

from __future__ import annotations

from evsys.schema.plugins import hookimpl
from evsys.schema.registry import Registrar


@hookimpl
def evsys_register(register: Registrar) -> None:
    """Register ``jsonl`` (one JSON object per line) and ``hf`` (Hugging Face ``datasets``)."""
    register.source("jsonl", "evsys.data.jsonl:read_jsonl", description="One JSON object per line.")
    register.source(
        "hf",
        "evsys.data.hf:read_hf",
        description=(
            "Hugging Face datasets: a Hub id, a save_to_disk directory, or parquet/csv/json/jsonl/arrow files "
            "(globs allowed); needs the 'hf' extra."
        ),
    )
