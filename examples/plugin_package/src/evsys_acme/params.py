"""Params models (imported at registration, so no heavy imports here)."""

from __future__ import annotations

from pydantic import Field

from evsys.schema.config import StrictModel


class EventLogParams(StrictModel):
    """Params of ``acme_event_log``."""

    filename: str = Field(default="events.jsonl", min_length=1, description="File name inside the run directory.")
    every: int = Field(default=1, ge=1, description="Log every Nth training step (evaluations and the run's start and end always).")
