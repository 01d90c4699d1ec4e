"""The shared part of the experiment-tracker callbacks (``tensorboard``, ``wandb``, ``mlflow``).

A tracker sees the run through four calls — :meth:`TrackerCallback.start` with the resolved config,
:meth:`TrackerCallback.log_metrics` for every train and benchmark row of ``metrics.jsonl`` at its
step, :meth:`TrackerCallback.finish` with the final summary — and implements only those. The
tracker's library is imported inside ``start``, never when this module or the plugin loads, so
``evsys validate`` imports none of them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from evsys.logging.redact import Redactor
from evsys.schema.errors import EvsysError, Location, Problem
from evsys.schema.protocols import BaseCallback, EvalResult, RunContext

#: the config snapshot the run loop writes in the run directory before any callback starts
RESOLVED_CONFIG_FILE = "resolved_config.json"


@dataclass
class RunSummary:
    """What a tracker records when the run ends."""

    status: str
    last_step: int
    max_steps: int
    final_metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """``{"status", "steps", "max_steps", "final_metrics", "error"?}`` (JSON-ready)."""
        data: dict[str, Any] = {
            "status": self.status,
            "steps": self.last_step,
            "max_steps": self.max_steps,
            "final_metrics": dict(self.final_metrics),
        }
        if self.error:
            data["error"] = self.error
        return data


def numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics row, as floats (``None``, NaN and booleans are left out, as ``metrics.jsonl`` writes null)."""
    return {
        key: float(value)
        for key, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }


def resolved_config(context: RunContext) -> dict[str, Any]:
    """The run's resolved config (every params model with its defaults, secrets redacted).

    Read from ``resolved_config.json`` in the run directory, which the run loop writes before the
    callbacks start; a driver that wrote none gets the config model's own dump, redacted the same way.
    """
    try:
        snapshot = json.loads((context.run_dir / RESOLVED_CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        snapshot = None
    if isinstance(snapshot, dict) and isinstance(snapshot.get("config"), dict):
        return dict(snapshot["config"])
    config = context.config
    data = config.model_dump(mode="json") if isinstance(config, BaseModel) else dict(config) if isinstance(config, Mapping) else {}
    return Redactor.from_environment(data).config(data)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": [1, 2]}}`` -> ``{"a.b": [1, 2]}``: nested mappings joined with dots, lists kept whole."""
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value} if prefix else {}


class TrackerCallback(BaseCallback):
    """Base class of the tracker callbacks: subclasses implement ``start``, ``log_metrics`` and ``finish``.

    ``state_dict`` / ``load_state_dict`` carry the tracker's run id through a checkpoint, so a
    run resumed with ``evsys run --resume`` continues the same tracker run where the tracker allows it.
    """

    #: the registered name, used in error messages
    name = "tracker"

    def __init__(self, params: BaseModel | None = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.context: RunContext | None = None
        self.run_id: str | None = None
        self.resume_id: str | None = None
        self.last_step = 0
        self._redactor = Redactor()

    # ---------------------------------------------------------------- for subclasses

    def start(self, context: RunContext, config: dict[str, Any]) -> None:
        """Open the tracker's run and record ``config``; set :attr:`run_id` when the tracker has one."""
        raise NotImplementedError

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Record one metrics row (finite numbers only) at ``step``."""
        raise NotImplementedError

    def finish(self, summary: RunSummary) -> None:
        """Record the final summary and close the tracker's run."""
        raise NotImplementedError

    # ---------------------------------------------------------------- the callback protocol

    def state_dict(self) -> dict[str, Any]:
        """``{"run_id": ...}``: what a checkpoint must remember to continue this tracker run."""
        return {"run_id": self.run_id} if self.run_id else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the tracker run a checkpoint recorded (applied in ``on_run_start``)."""
        run_id = state.get("run_id")
        self.resume_id = str(run_id) if run_id else None

    def on_run_start(self, context: RunContext) -> None:
        """Open the tracker run with the resolved config; a tracker that cannot start is one clear error."""
        self.context = context
        self.last_step = context.resumed_from_step
        self._redactor = Redactor.from_environment(context.config)
        try:
            self.start(context, resolved_config(context))
        except EvsysError:
            raise
        except Exception as exc:  # a tracker's own failure (server unreachable, bad URI) is one line
            raise EvsysError(
                Problem(f"callback '{self.name}' could not start: {type(exc).__name__}: {self._redactor.text(str(exc))}", Location(str(context.run_dir)))
            ) from None

    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        """Log the train row at ``step``."""
        self.last_step = step
        self.log_metrics(step, numeric_metrics(metrics))

    def on_eval_end(self, result: EvalResult) -> None:
        """Log the benchmark row at its step."""
        self.log_metrics(result.step, numeric_metrics(result.metrics))

    def on_run_end(self, status: str, final_metrics: dict[str, float | None], error: str | None = None) -> None:
        """Record the final summary (status, steps, final metrics, error) and close the tracker run."""
        if self.context is None:
            return
        summary = RunSummary(
            status,
            self.last_step,
            self.context.max_steps,
            numeric_metrics(final_metrics),
            self._redactor.text(error) if error else None,
        )
        self.finish(summary)
