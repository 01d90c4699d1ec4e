"""The callback ``acme_event_log``: every run event as a JSON line in ``<run_dir>/events.jsonl``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import IO, Any

from evsys.schema.protocols import BaseCallback, EvalResult, RunContext
from evsys_acme.params import EventLogParams


def _clean(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}


class EventLog(BaseCallback):
    """Appends ``{"event": "run_start" | "step" | "eval" | "run_end", ...}`` lines, flushed as they happen."""

    def __init__(self, params: EventLogParams | None = None, **kwargs: Any) -> None:
        super().__init__(params or EventLogParams(), **kwargs)
        self.params: EventLogParams
        self.path: Path | None = None
        self._file: IO[str] | None = None

    def _write(self, row: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(row) + "\n")
            self._file.flush()

    def on_run_start(self, context: RunContext) -> None:
        """Open the file and record the run's name and step count."""
        context.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = context.run_dir / self.params.filename
        self._file = self.path.open("a", encoding="utf-8")
        self._write({"event": "run_start", "run": context.run_name, "max_steps": context.max_steps})

    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        """Record the step's loss (every ``every`` steps)."""
        if step % self.params.every == 0:
            self._write({"event": "step", "step": step, "loss": _clean(metrics).get("train/mean_loss")})

    def on_eval_end(self, result: EvalResult) -> None:
        """Record a benchmark's metrics."""
        self._write({"event": "eval", "step": result.step, "benchmark": result.benchmark, "metrics": _clean(result.metrics)})

    def on_run_end(self, status: str, final_metrics: dict[str, float | None], error: str | None = None) -> None:
        """Record the outcome and close the file."""
        self._write({"event": "run_end", "status": status, "error": error})
        if self._file is not None:
            self._file.close()
            self._file = None
