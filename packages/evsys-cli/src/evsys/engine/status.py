"""How a run or an evaluation ends: its outcome, and the one place that turns an exception into a status.

Both ``evsys run`` (:mod:`evsys.engine.loop`) and ``evsys eval`` (:mod:`evsys.engine.evaluation`)
wrap their work in :func:`tracked_status`: an interrupt is ``interrupted``, anything else raised is
``failed`` with a one-line error, every observer hears ``on_run_end`` exactly once, and a write the
environment refused (disk full, read-only) becomes an :class:`EvsysError` naming the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from evsys.engine.rundir import WRITE_ERRORS, describe_write_error
from evsys.schema.errors import EvsysError, Location, Problem
from evsys.schema.protocols import Callback

LOG_FILES = "metrics.jsonl, predictions/, summary.md"
STATUSES = ("completed", "failed", "interrupted")


@dataclass
class Outcome:
    """What a run or an evaluation ends with: its status, final metrics and where the logs are."""

    status: str
    metrics: dict[str, float | None]
    logs: Path
    error: str | None = None

    def __str__(self) -> str:
        lines = [
            f"Status:    {self.status}",
            f"Metrics:   {self.metrics}",
            f"Logs:      {self.logs} ({LOG_FILES})",
        ]
        if self.error:
            lines.append(f"Error:     {self.error}")
        return "\n".join(lines)


@dataclass
class RunOutcome(Outcome):
    """A training run's outcome; ``exit_code`` is 0, or 130 / 143 when SIGINT / SIGTERM stopped it."""

    run_dir: Path = Path()
    exit_code: int = 0
    resumed_from_step: int = 0


@dataclass
class EvalOutcome(Outcome):
    """An evaluation's outcome: which checkpoint was scored (None: the base model) and at which step."""

    checkpoint: str | None = None
    step: int = 0


@dataclass
class RunStatus:
    """The status being tracked: 'completed' until something says otherwise."""

    value: str = "completed"
    error: str | None = None


def _call_quietly(errors: list[BaseException], method: Callable[..., object], *args: object) -> None:
    """Call ``method``; remember an exception instead of letting it hide the run's own outcome."""
    try:
        method(*args)
    except Exception as exc:
        errors.append(exc)


def _write_failure(exc: OSError, where: Path, suffix: str) -> EvsysError:
    return EvsysError(Problem(f"{exc.strerror or exc}{suffix}", Location(str(exc.filename or where))))


@contextmanager
def tracked_status(
    observers: Sequence[Callback],
    metrics: Callable[[], dict[str, float | None]],
    where: Path,
    kept: Callable[[], str] = str,
) -> Iterator[RunStatus]:
    """Run the body, then tell every observer ``on_run_end(status, metrics(), error)``.

    ``where`` names the directory in a refused-write error, ``kept()`` says what survived it (the
    run loop: the rows and checkpoint kept, and ``--resume``). An observer's own failure at the end
    is raised only when the body completed (it never hides the body's exception).
    """
    status = RunStatus()
    try:
        yield status
    except KeyboardInterrupt:
        status.value, status.error = "interrupted", "interrupted by the user"
        raise
    except EvsysError as exc:
        status.value, status.error = "failed", str(exc)
        raise
    except OSError as exc:
        status.value = "failed"
        if exc.errno not in WRITE_ERRORS:
            status.error = f"{type(exc).__name__}: {exc}"
            raise
        status.error = f"{describe_write_error(exc)}{kept()}"
        raise _write_failure(exc, where, kept()) from None
    except Exception as exc:
        status.value, status.error = "failed", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        errors: list[BaseException] = []
        for observer in observers:
            _call_quietly(errors, observer.on_run_end, status.value, dict(metrics()), status.error)
        if errors and status.value == "completed":
            first = errors[0]
            if isinstance(first, OSError) and first.errno in WRITE_ERRORS:
                raise _write_failure(first, where, " (while finishing the run)")
            raise first
