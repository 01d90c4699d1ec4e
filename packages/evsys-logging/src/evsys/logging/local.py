"""``local_logger``: metrics.jsonl, predictions/<benchmark>.jsonl and summary.md in the run directory.

Every row is flushed as it is written, and secret values are redacted (:mod:`evsys.logging.redact`).
For resuming, :meth:`LocalLogger.state_dict` records how many bytes of each file a checkpoint
covers; :meth:`LocalLogger.load_state_dict` plus ``on_run_start`` of the resumed run move anything
written after that checkpoint to ``<file>.orphaned-<timestamp>``, so each step appears once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evsys.logging.jsonl_writer import JsonlWriter, set_aside_tail, timestamp, write_text_atomic
from evsys.logging.params import LocalLoggerParams
from evsys.logging.redact import Redactor
from evsys.schema.protocols import BaseCallback, EvalResult, RunContext

METRICS_FILE = "metrics.jsonl"
PREDICTIONS_DIR = "predictions"
SUMMARY_FILE = "summary.md"


def _verifier_programs(before: Mapping[str, int] | None = None) -> Any:
    """evsys-verifiers' count of the programs it ran (where it is installed): a snapshot, or the summary line."""
    try:
        from evsys.verifiers import sandbox
    except ImportError:
        return None
    return sandbox.program_counts() if before is None else sandbox.programs_line(before)


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
        self._resume: dict[str, Any] | None = None
        self._redactor = Redactor()
        self.orphaned: list[Path] = []
        self._programs_before: dict[str, int] | None = None

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must remember: each file's size now, and the evaluations so far."""
        sizes: dict[str, int] = {}
        if self._metrics is not None:
            if self.params.fsync:
                self._metrics.sync()
            sizes[METRICS_FILE] = self._metrics.size()
        for name, writer in self._predictions.items():
            if self.params.fsync:
                writer.sync()
            sizes[f"{PREDICTIONS_DIR}/{name}.jsonl"] = writer.size()
        return {"sizes": sizes, "evals": [list(e) for e in self._evals], "last_step": self._last_step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from a checkpoint's :meth:`state_dict` (``{}``: from the start); applied in ``on_run_start``."""
        self._resume = dict(state)

    def _apply_resume(self, directory: Path) -> None:
        state, self._resume = self._resume or {}, None
        sizes: dict[str, int] = {str(k): int(v) for k, v in dict(state.get("sizes", {})).items()}
        stamp = timestamp()
        files = [directory / METRICS_FILE, *sorted((directory / PREDICTIONS_DIR).glob("*.jsonl"))]
        for file in files:
            relative = file.relative_to(directory).as_posix()
            moved = set_aside_tail(file, sizes.get(relative, 0), stamp)
            if moved is not None:
                self.orphaned.append(moved)
        for step, key, value in state.get("evals", []):
            self._evals.append((int(step), str(key), value))
            self._latest[str(key)] = (int(step), value)

    def on_run_start(self, context: RunContext) -> None:
        """Open the run directory's files for appending (after setting aside rows a resumed run redoes)."""
        self._context = context
        self._programs_before = _verifier_programs()
        self._redactor = Redactor.from_environment(context.config)
        self.directory = Path(self.params.dir) if self.params.dir else context.run_dir
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / PREDICTIONS_DIR).mkdir(exist_ok=True)
        if self._resume is not None:
            self._apply_resume(self.directory)
        self._metrics = self._writer(self.directory / METRICS_FILE)
        for existing in sorted((self.directory / PREDICTIONS_DIR).glob("*.jsonl")):
            if existing.stat().st_size:
                self._predictions.setdefault(existing.stem, self._writer(existing))
        self._last_step = context.resumed_from_step

    def _writer(self, path: Path) -> JsonlWriter:
        return JsonlWriter(path, fsync=self.params.fsync, redact=self._redactor.value)

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
            writer = self._writer(self.directory / PREDICTIONS_DIR / f"{result.benchmark}.jsonl")
            self._predictions[result.benchmark] = writer
        for row in result.predictions:
            writer.write(row)
        self._remember(result.step, result.metrics)
        for key, value in result.metrics.items():
            self._evals.append((result.step, key, value))

    def _at_step(self, key: str) -> str:
        """`` (step N)``: the step a final metric was logged at, when this logger saw it."""
        seen = self._latest.get(key)
        return f" (step {seen[0]})" if seen is not None else ""

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
        programs = _verifier_programs(self._programs_before or {})
        if programs:
            lines.append(programs)  # e.g. "Verifier programs: 240 in bwrap (bubblewrap 0.8.0)"
        if error:
            lines.append(f"Error: {error}")
        lines += ["", "## Final metrics", ""]
        if final_metrics:
            lines += [f"- {key}: {_format_value(value)}{self._at_step(key)}" for key, value in final_metrics.items()]
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
        try:
            write_text_atomic(self.directory / SUMMARY_FILE, self._redactor.text("\n".join(lines) + "\n"))
        finally:
            if self._metrics is not None:
                self._metrics.close()
            for writer in self._predictions.values():
                writer.close()
