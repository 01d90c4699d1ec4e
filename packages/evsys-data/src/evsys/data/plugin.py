"""Registers the built-in data sources ``jsonl`` and ``hf``, and the transforms made with ``@register_transform``."""

from __future__ import annotations

from evsys.schema.plugins import hookimpl
from evsys.schema.registry import SourceRegistrar


@hookimpl
def evsys_register_sources(registry: SourceRegistrar) -> None:
    """Register ``jsonl`` (one JSON object per line) and ``hf`` (Hugging Face ``datasets``)."""
    registry.register("jsonl", "evsys.data.jsonl:read_jsonl", description="One JSON object per line.")
    registry.register(
        "hf",
        "evsys.data.hf:read_hf",
        description=(
            "Hugging Face datasets: a Hub id, a save_to_disk directory, or parquet/csv/json/jsonl/arrow files "
            "(globs allowed); needs the 'hf' extra."
        ),
    )
