"""``console``: run progress on stderr — a live bar on a terminal, plain lines elsewhere.

What is shown: before step 1, one line per phase (data, benchmarks, model load, the first rollout;
a backend adds its own, e.g. a download or conversion, by logging to the ``evsys.progress`` logger
at INFO); then step / max_steps, loss, the last benchmark metric, sampled tokens per second,
elapsed time and ETA. Elapsed counts from the process's start (``started``), so model loading is
in it; the ETA is the steps left times the measured time per step since training began; tokens
per second is ``train/sampled_tokens_per_s`` (tokens sampled / seconds spent sampling), never a
step's wall time. How it is shown depends on where stderr goes (the *mode*):

- ``bar``: one line redrawn in place (``\\r``), when the stream is a terminal, ``CI`` is not set and
  ``TERM`` is not ``dumb``. Benchmark results are printed above the bar as they arrive.
- ``lines``: one plain line per step (every ``every`` steps, and always the last), one per benchmark
  result, one at the end — for CI logs, pipes and files. Never a control character.
- ``off``: nothing.

``EVSYS_PROGRESS=bar|lines|off`` overrides the choice; ``evsys run --quiet`` turns progress off.
No colour is ever printed, so ``NO_COLOR`` holds trivially.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from typing import IO, Any, Literal

from evsys.logging.params import ConsoleParams
from evsys.schema.protocols import BaseCallback, EvalResult, RunContext

Mode = Literal["bar", "lines", "off"]
PROGRESS_ENV = "EVSYS_PROGRESS"
#: metrics holding sampled tokens per second of sampling, first found wins
SPEED_METRICS = ("train/sampled_tokens_per_s", "train/rollout_tokens_per_s")
BAR_WIDTH = 20
#: the logger whose INFO records the console shows as phase lines (backends: downloads, conversions)
PROGRESS_LOGGER = "evsys.progress"


def process_started() -> float:
    """This process's start on the ``time.monotonic()`` clock (Linux ``/proc``), else now."""
    now = time.monotonic()
    try:
        with open("/proc/self/stat", encoding="ascii") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime", encoding="ascii") as handle:
            uptime = float(handle.read().split()[0])
        started_after_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return now
    age = uptime - started_after_boot
    return now - age if 0 <= age < 86400 * 365 else now


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _value(value: float | None) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"


def choose_mode(stream: IO[str], environ: dict[str, str] | None = None) -> Mode:
    """The progress mode for ``stream``: ``EVSYS_PROGRESS`` if set, else ``bar`` on an interactive terminal, else ``lines``."""
    env = os.environ if environ is None else environ
    forced = env.get(PROGRESS_ENV, "").strip().lower()
    if forced in ("bar", "lines", "off"):
        return forced  # type: ignore[return-value]
    if env.get("CI", "").strip().lower() not in ("", "0", "false") or env.get("TERM") == "dumb":
        return "lines"
    isatty = getattr(stream, "isatty", None)
    try:
        return "bar" if callable(isatty) and isatty() else "lines"
    except ValueError:  # a closed stream
        return "lines"


def tokens_per_second(metrics: dict[str, float]) -> float | None:
    """Sampled tokens per second of sampling (``train/sampled_tokens_per_s``), or None on a step that did not sample."""
    value = next((metrics[key] for key in SPEED_METRICS if metrics.get(key) is not None), None)
    return float(value) if value is not None else None


class _PhaseHandler(logging.Handler):
    """Shows ``evsys.progress`` INFO records as console lines."""

    def __init__(self, console: ConsoleProgress) -> None:
        super().__init__(logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.on_phase(record.getMessage())
        except Exception:  # pragma: no cover - logging must never break the run
            self.handleError(record)


class ConsoleProgress(BaseCallback):
    """Prints run progress to a stream (stderr by default) as a live bar or as plain lines (see the module doc)."""

    def __init__(
        self,
        params: ConsoleParams | None = None,
        *,
        stream: IO[str] | None = None,
        mode: Mode | None = None,
        started: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(params or ConsoleParams(), **kwargs)
        self.params: ConsoleParams
        self._stream = stream or sys.stderr
        self.mode: Mode = mode or choose_mode(self._stream)
        self._start = time.monotonic() if started is None else started
        self._train_start = self._start
        self._first_step = 0
        self._max_steps = 0
        self._last_eval = ""
        self._bar_shown = False
        self._last_bar = ""
        self._handler: _PhaseHandler | None = None
        self._saved_logger: tuple[int, bool] | None = None

    # ----------------------------------------------------------------- phase lines

    def attach(self) -> None:
        """Show ``evsys.progress`` INFO records as phase lines (from the first phase line until :meth:`detach` or the run's end)."""
        if self.mode == "off" or self._handler is not None:
            return
        progress = logging.getLogger(PROGRESS_LOGGER)
        self._saved_logger = (progress.level, progress.propagate)
        self._handler = _PhaseHandler(self)
        progress.addHandler(self._handler)
        progress.setLevel(logging.INFO)
        progress.propagate = False  # shown here, not a second time by --log-level info

    def detach(self) -> None:
        """Stop showing ``evsys.progress`` records."""
        if self._handler is None:
            return
        progress = logging.getLogger(PROGRESS_LOGGER)
        progress.removeHandler(self._handler)
        if self._saved_logger is not None:
            progress.setLevel(self._saved_logger[0])
            progress.propagate = self._saved_logger[1]
        self._handler = None

    def on_phase(self, text: str) -> None:
        """Print one line saying what the run does now (before step 1: data, benchmarks, model, first rollout)."""
        if self.mode == "off":
            return
        self.attach()
        self._print(f"[{_clock(time.monotonic() - self._start)}] {text}")

    # ----------------------------------------------------------------- output

    def _print(self, text: str) -> None:
        """Print a whole line (above the bar, which is redrawn after it)."""
        if self.mode == "off":
            return
        if self.mode == "bar" and self._bar_shown:
            self._stream.write("\r\x1b[2K")
        print(text, file=self._stream, flush=True)
        if self.mode == "bar" and self._bar_shown:
            self._bar_shown = bool(self._last_bar)
            self._stream.write(self._last_bar)
            self._stream.flush()

    def _draw(self, text: str, *, keep: bool = True) -> None:
        """Redraw the bar line in place, cut to the terminal's width; ``keep``: redraw it after printed lines."""
        width = shutil.get_terminal_size((100, 20)).columns
        text = text[: max(10, width - 1)]
        self._stream.write("\r\x1b[2K" + text)
        self._stream.flush()
        self._bar_shown = True
        if keep:
            self._last_bar = text

    def _end_bar(self) -> None:
        if self.mode == "bar" and self._bar_shown:
            self._stream.write("\n")
            self._stream.flush()
            self._bar_shown = False

    # ----------------------------------------------------------------- callback

    def on_run_start(self, context: RunContext) -> None:
        """Remember the step range and start the step clock (elapsed keeps counting from ``started``)."""
        self._train_start = time.monotonic()
        self._first_step = context.resumed_from_step
        self._max_steps = context.max_steps

    def step_line(self, step: int, metrics: dict[str, float]) -> str:
        """``step 3/10 | loss 0.4123 | 512 tok/s | val/val/pass@1 0.300 | 00:12 elapsed, ETA 00:28``.

        The ETA is the steps left times the mean time per step measured since training began
        (in-loop evaluations included), not the elapsed time, which also holds loading.
        """
        now = time.monotonic()
        elapsed = now - self._start
        done = step - self._first_step
        remaining = (self._max_steps - step) * (now - self._train_start) / done if done > 0 else 0.0
        parts = [f"step {step}/{self._max_steps}"]
        loss = metrics.get("train/mean_loss")
        if loss is not None:
            parts.append(f"loss {loss:.4f}")
        speed = tokens_per_second(metrics)
        if speed is not None:
            parts.append(f"{speed:.0f} tok/s")
        if self._last_eval:
            parts.append(self._last_eval)
        parts.append(f"{_clock(elapsed)} elapsed, ETA {_clock(remaining)}")
        return " | ".join(parts)

    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        """Redraw the bar, or print a step line every ``every`` steps (and at the last step)."""
        if self.mode == "off":
            return
        line = self.step_line(step, metrics)
        if self.mode == "bar":
            total = max(self._max_steps, 1)
            filled = min(BAR_WIDTH, BAR_WIDTH * step // total)
            self._draw(f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {line}")
            return
        if step % self.params.every and step != self._max_steps:
            return
        self._print(line)

    def eval_started(self, benchmark: str, num_tasks: int, step: int) -> None:
        """Say that a benchmark is being scored (``evsys eval`` calls this; not part of the Callback protocol)."""
        text = f"eval step {step} | scoring {benchmark} ({num_tasks} task{'s' if num_tasks != 1 else ''}) ..."
        if self.mode == "bar":
            self._draw(text, keep=False)
        elif self.mode == "lines":
            self._print(text)

    def on_eval_end(self, result: EvalResult) -> None:
        """Print the benchmark's metrics and keep the first for later step lines."""
        shown = ", ".join(f"{key} {_value(value)}" for key, value in result.metrics.items())
        self._print(f"eval step {result.step} | {shown}")
        if result.metrics:
            key, value = next(iter(result.metrics.items()))
            self._last_eval = f"{key} {_value(value)}"

    def on_run_end(self, status: str, final_metrics: dict[str, float | None], error: str | None = None) -> None:
        """End the bar and print the final status."""
        self.detach()
        self._end_bar()
        self._print(f"run {status} after {_clock(time.monotonic() - self._start)}" + (f": {error}" if error else ""))
