"""Registers the built-in data source ``jsonl`` and the transforms made with ``@register_transform``."""

from __future__ import annotations

from evsys.schema.plugins import hookimpl
from evsys.schema.registry import SourceRegistrar


@hookimpl
def evsys_register_sources(registry: SourceRegistrar) -> None:
    """Register ``jsonl``: one JSON object per line."""
    registry.register("jsonl", "evsys.data.jsonl:read_jsonl", description="One JSON object per line.")
