"""``console``: one progress line per step on stderr (step / max_steps, loss, last benchmark metric, elapsed, ETA)."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from evsys.logging.params import ConsoleParams
from evsys.schema.protocols import BaseCallback, EvalResult, RunContext


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class ConsoleProgress(BaseCallback):
    """Prints progress to a stream (stderr by default)."""

    def __init__(self, params: ConsoleParams | None = None, *, stream: IO[str] | None = None, **kwargs: Any) -> None:
        super().__init__(params or ConsoleParams(), **kwargs)
        self.params: ConsoleParams
        self._stream = stream or sys.stderr
        self._start = time.monotonic()
        self._first_step = 0
        self._max_steps = 0
        self._last_eval = ""

    def _print(self, text: str) -> None:
        print(text, file=self._stream, flush=True)

    def on_run_start(self, context: RunContext) -> None:
        """Remember the step range."""
        self._start = time.monotonic()
        self._first_step = context.resumed_from_step
        self._max_steps = context.max_steps

    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        """Print ``step 3/10 | loss 0.4123 | val/val/pass@1 0.30 | 00:12 elapsed, ETA 00:28``."""
        if step % self.params.every and step != self._max_steps:
            return
        elapsed = time.monotonic() - self._start
        done = step - self._first_step
        remaining = (self._max_steps - step) * elapsed / done if done > 0 else 0.0
        parts = [f"step {step}/{self._max_steps}"]
        loss = metrics.get("train/mean_loss")
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        tokens_per_s = metrics.get("train/rollout_tokens_per_s")
        if tokens_per_s is not None:
            parts.append(f"{tokens_per_s:.0f} tok/s")
        if self._last_eval:
            parts.append(self._last_eval)
        parts.append(f"{_clock(elapsed)} elapsed, ETA {_clock(remaining)}")
        self._print(" | ".join(parts))

    def on_eval_end(self, result: EvalResult) -> None:
        """Print the benchmark's metrics and keep the first for later step lines."""
        shown = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} n/a" for k, v in result.metrics.items())
        self._print(f"eval step {result.step} | {shown}")
        if result.metrics:
            key, value = next(iter(result.metrics.items()))
            self._last_eval = f"{key} {value:.3f}" if isinstance(value, float) else f"{key} n/a"

    def on_run_end(self, status: str, final_metrics: dict[str, float | None], error: str | None = None) -> None:
        """Print the final status."""
        self._print(f"run {status} after {_clock(time.monotonic() - self._start)}" + (f": {error}" if error else ""))
