"""Params of the built-in callbacks (no heavy imports: the plugin loads this at validate time)."""

from __future__ import annotations

from pydantic import Field

from evsys.schema.config import StrictModel


class LocalLoggerParams(StrictModel):
    """Params of ``local_logger``."""

    dir: str | None = Field(
        default=None,
        description="Write here instead of the run directory '<output_dir>/<name>/'.",
    )
    fsync: bool = Field(
        default=False,
        description="fsync each row after writing (survives a power loss, slower); rows are always flushed.",
    )


class ConsoleParams(StrictModel):
    """Params of ``console``."""

    every: int = Field(default=1, ge=1, description="Print a line every N steps.")
