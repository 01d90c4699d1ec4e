"""``local_logger``: metrics.jsonl, predictions/<benchmark>.jsonl and summary.md in the run directory."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from evsys.logging.jsonl_writer import JsonlWriter, write_text_atomic
from evsys.logging.params import LocalLoggerParams
from evsys.schema.protocols import BaseCallback, EvalResult, RunContext

METRICS_FILE = "metrics.jsonl"
PREDICTIONS_DIR = "predictions"
SUMMARY_FILE = "summary.md"


def _format_value(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.4f}"
    return f"{value:g}" if isinstance(value, float) else str(value)


class LocalLogger(BaseCallback):
    """Writes every train and benchmark row as it happens, and ``summary.md`` at the end."""

    def __init__(self, params: LocalLoggerParams | None = None, **kwargs: Any) -> None:
        super().__init__(params or LocalLoggerParams(), **kwargs)
        self.params: LocalLoggerParams
        self.directory: Path | None = None
        self._metrics: JsonlWriter | None = None
        self._predictions: dict[str, JsonlWriter] = {}
        self._context: RunContext | None = None
        self._last_step = 0
        self._latest: dict[str, tuple[int, float | None]] = {}
        self._evals: list[tuple[int, str, float | None]] = []

    def on_run_start(self, context: RunContext) -> None:
        """Open the run directory's files for appending."""
        self._context = context
        self.directory = Path(self.params.dir) if self.params.dir else context.run_dir
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / PREDICTIONS_DIR).mkdir(exist_ok=True)
        self._metrics = JsonlWriter(self.directory / METRICS_FILE, fsync=self.params.fsync)
        self._last_step = context.resumed_from_step

    def _remember(self, step: int, metrics: dict[str, float | None]) -> None:
        for key, value in metrics.items():
            self._latest[key] = (step, value)

    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        """Append ``{"step", "split": "train", "metrics"}``."""
        assert self._metrics is not None, "on_run_start was not called"
        self._metrics.write({"step": step, "split": "train", "metrics": metrics})
        self._last_step = step
        self._remember(step, dict(metrics))

    def on_eval_end(self, result: EvalResult) -> None:
        """Append the benchmark's metrics row and its prediction rows."""
        assert self._metrics is not None and self.directory is not None, "on_run_start was not called"
        self._metrics.write({"step": result.step, "split": result.split, "metrics": result.metrics})
        writer = self._predictions.get(result.benchmark)
        if writer is None:
            writer = JsonlWriter(self.directory / PREDICTIONS_DIR / f"{result.benchmark}.jsonl", fsync=self.params.fsync)
            self._predictions[result.benchmark] = writer
        for row in result.predictions:
            writer.write(row)
        self._remember(result.step, result.metrics)
        for key, value in result.metrics.items():
            self._evals.append((result.step, key, value))

    def on_run_end(self, status: str, final_metrics: dict[str, float | None], error: str | None = None) -> None:
        """Write ``summary.md`` (atomically) and close the files."""
        if self.directory is None:
            return
        context = self._context
        lines = [f"# EvSys run: {context.run_name if context else self.directory.name}", ""]
        lines.append(f"Status: {status}")
        if context is not None:
            config = context.config
            lines.append(f"Steps: {self._last_step} / {context.max_steps}")
            lines.append(f"Model: {config.model.name}")
            lines.append(f"Backend: {config.backend.kind}")
            lines.append(f"Algorithm: {config.algorithm.kind}")
        if error:
            lines.append(f"Error: {error}")
        lines += ["", "## Final metrics", ""]
        if final_metrics:
            lines += [f"- {key}: {_format_value(value)}" for key, value in final_metrics.items()]
        else:
            lines.append("- none")
        lines += ["", "## Evaluations", ""]
        if self._evals:
            lines += [f"- step {step}: {key} = {_format_value(value)}" for step, key, value in self._evals]
        else:
            lines.append("- none")
        lines += ["", "## Files", "", f"- [{METRICS_FILE}]({METRICS_FILE}): one row per step and per evaluation"]
        for name in sorted(self._predictions):
            lines.append(f"- [{PREDICTIONS_DIR}/{name}.jsonl]({PREDICTIONS_DIR}/{name}.jsonl): answers to benchmark '{name}'")
        write_text_atomic(self.directory / SUMMARY_FILE, "\n".join(lines) + "\n")
        if self._metrics is not None:
            self._metrics.close()
        for writer in self._predictions.values():
            writer.close()
