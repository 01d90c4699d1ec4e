"""Graceful interrupts: the first SIGINT / SIGTERM asks the run to stop after the current step; a second exits at once.

A stop request is a flag the run loop polls between steps, so a step, its in-loop evaluations and
the checkpoint after it are never cut in half. A second signal calls ``os._exit(128 + signum)``
without running any more Python code: every row already written is a whole, flushed line, and
checkpoints, ``summary.md`` and the ``latest`` pointer are replaced atomically, so no file is left
half-written (a leftover temporary checkpoint directory is removed by the next ``--resume``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
SIGNAL_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


class InterruptGuard:
    """A context manager installing the handlers (main thread only; elsewhere it does nothing)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """Whether a stop was asked for."""
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        """130 for SIGINT, 143 for SIGTERM (128 + the signal number)."""
        return EXIT_CODES.get(self.signum or signal.SIGINT, 128 + (self.signum or signal.SIGINT))

    @property
    def reason(self) -> str:
        """A short description for ``summary.md``."""
        name = SIGNAL_NAMES.get(self.signum or 0, f"signal {self.signum}")
        return f"interrupted by {name}; resume with --resume"

    def request(self, signum: int = signal.SIGINT) -> None:
        """Ask the run to stop (what the first signal does)."""
        if self.signum is None:
            self.signum = signum

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            with contextlib.suppress(OSError):
                os.write(2, b"\nevsys: second interrupt, exiting now (resume from the last checkpoint with --resume)\n")
            os._exit(EXIT_CODES.get(signum, 128 + signum))
        self.signum = signum
        with contextlib.suppress(OSError):
            os.write(2, b"\nevsys: stopping after this step and saving a checkpoint (interrupt again to exit now)\n")

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            for signum in EXIT_CODES:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
