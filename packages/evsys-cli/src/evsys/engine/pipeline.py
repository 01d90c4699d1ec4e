"""One-step-off-policy steps: step t+1 starts sampling while step t trains, on a backend that allows it.

A backend opts in with ``max_steps_off_policy >= 1`` (the tinker backend's ``backend.params``, as
tinker-cookbook's async option; both are declared in the Backend protocol): through
``on_training_submitted(callback)`` it calls ``callback`` when a
step's ``forward_backward`` has gone out, lets ``sample`` use weights up to that many optimizer steps
old while training is in flight, and submits the training requests of the steps in order.
:class:`StepPipeline` then starts step t+1 (in a worker thread) the moment step t's training is
submitted, unless step t is followed by an evaluation or a checkpoint (which must see step t's
weights alone) or a stop was requested. Steps finish, and are reported, in order.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

from evsys.schema.protocols import Algorithm, Backend


class _StepOfThread(threading.local):
    """The step a worker thread runs (None outside the pipeline's threads)."""

    step: int | None = None


class StepPipeline:
    """Runs ``algorithm.train_step`` for consecutive steps, each next one overlapping the current one's training.

    ``overlap(step)``: whether step ``step + 1`` may start before ``step`` is done (no evaluation or
    checkpoint after ``step``, not the last step, no stop requested).
    """

    def __init__(self, algorithm: Algorithm, backend: Backend, batches: Iterator[Any], overlap: Callable[[int], bool]) -> None:
        self._algorithm = algorithm
        self._batches = batches
        self._overlap = overlap
        self._lock = threading.Lock()
        self._running: dict[int, Future[dict[str, float]]] = {}
        self._submitted: set[int] = set()
        self._current = 0
        self._local = _StepOfThread()
        backend.on_training_submitted(self._training_submitted)

    def _start(self, step: int) -> Future[dict[str, float]]:
        future: Future[dict[str, float]] = Future()
        batch = next(self._batches)

        def work() -> None:
            self._local.step = step
            try:
                future.set_result(dict(self._algorithm.train_step(batch, step)))
            except BaseException as exc:  # re-raised in the loop's thread by run()
                future.set_exception(exc)
            finally:
                self._training_submitted(step)  # a step that trains nothing still lets the next one go

        self._running[step] = future
        threading.Thread(target=work, name=f"evsys-step-{step}", daemon=True).start()
        return future

    def _training_submitted(self, step: int | None = None) -> None:
        """Called by the backend (in the step's thread) once the step's training requests are out."""
        with self._lock:
            step = self._local.step if step is None else step
            if step is None:
                return
            self._submitted.add(step)
            self._maybe_start_next()

    def _maybe_start_next(self) -> None:
        current = self._current
        if current in self._submitted and current + 1 not in self._running and self._overlap(current):
            self._start(current + 1)

    def in_flight(self, step: int) -> bool:
        """Whether ``step`` has already started (it must then be run to its end and recorded)."""
        return step in self._running

    def run(self, step: int) -> dict[str, float]:
        """Step ``step``'s metrics: the running step's, or the step started now; waits for it to finish."""
        with self._lock:
            self._current = step
            future = self._running.get(step) or self._start(step)
            self._maybe_start_next()
        try:
            return future.result()
        finally:
            with self._lock:
                self._running.pop(step, None)
                self._submitted.discard(step)
