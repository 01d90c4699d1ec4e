"""Time and bookkeeping of the simulated Tinker service: latencies, futures, fault injection, the tally."""

from __future__ import annotations

import concurrent.futures
import heapq
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Log = list[tuple[str, str]]


@dataclass
class Faults:
    """Errors to raise, per method name, on the next calls (submission) or the next waits (result)."""

    fail_submit: dict[str, list[BaseException]] = field(default_factory=dict)
    fail_result: dict[str, list[BaseException]] = field(default_factory=dict)

    def on_submit(self, name: str) -> None:
        """Raise the next submission error queued for ``name``, if any."""
        queue = self.fail_submit.get(name)
        if queue:
            raise queue.pop(0)

    def next_result_error(self, name: str) -> BaseException | None:
        """The next result error queued for ``name``, if any."""
        queue = self.fail_result.get(name)
        return queue.pop(0) if queue else None


@dataclass(frozen=True)
class Latency:
    """Seconds each kind of request takes on the simulated service, each drawn with +-``jitter`` (a fraction)."""

    sample_s: float = 0.0
    teacher_s: float = 0.0
    forward_backward_s: float = 0.0
    optim_s: float = 0.0
    save_s: float = 0.0
    jitter: float = 0.0
    seed: int = 0


@dataclass
class Tally:
    """What the simulated service did: requests per method and tokens sampled, scored and trained."""

    requests: dict[str, int] = field(default_factory=dict)
    tokens_sampled: int = 0
    tokens_scored: int = 0
    tokens_trained: int = 0
    datums_trained: int = 0
    drawn: list[tuple[str, float, float]] = field(default_factory=list)
    """``(method, submitted_at, latency_s)`` of every request (the benchmark's critical path)."""
    links: list[tuple[int, int]] = field(default_factory=list)
    """``(scoring request, sample request)``: indices into ``drawn`` of a scoring request and of the
    sample request whose completion it scores."""

    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, method: str) -> None:
        """One more request of ``method``."""
        with self._lock:
            self.requests[method] = self.requests.get(method, 0) + 1

    def add(self, name: str, amount: int) -> None:
        """Add ``amount`` to the counter ``name`` (``tokens_sampled``, ``tokens_scored``, ...), thread-safely."""
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def summary_lines(self) -> list[str]:
        """The dry run's summary, one fact a line."""
        calls = ", ".join(f"{name} {count}" for name, count in sorted(self.requests.items())) or "none"
        return [
            f"requests: {sum(self.requests.values())} ({calls})",
            f"tokens sampled: {self.tokens_sampled}",
            f"tokens scored (prompt logprobs): {self.tokens_scored}",
            f"tokens trained: {self.tokens_trained} in {self.datums_trained} datums",
        ]


class SimFuture:
    """Shaped like the SDK's ``APIFuture``: ``result(timeout=None)`` waits until the simulated service is done,
    and ``future()`` is a ``concurrent.futures.Future`` of the same outcome (done callbacks, ``wait``).

    With a ``worker`` (a service with latencies) the response is computed there from submission on (the
    service works while the client does other things) and the future completes at ``ready_at``; otherwise
    the response is computed on the first ``result()`` (or ``future()``).
    """

    def __init__(
        self, name: str, log: Log, value: Any = None, error: BaseException | None = None, ready_at: float = 0.0,
        worker: SimWorker | None = None,
    ) -> None:
        self.name = name
        self._log = log
        self._value = value
        self._error = error
        self._computed = not callable(value) or error is not None
        self._ready_at = ready_at
        self._done = threading.Event()
        self._notice: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._lazy = worker is None
        self.waits = 0
        if worker is not None:
            worker.add(self)

    def _compute(self) -> None:
        """The service's work: the response (or the error computing it raised), once."""
        if not self._computed:
            try:
                self._value = self._value()
            except Exception as exc:
                self._error = exc
            self._computed = True

    def _complete(self) -> None:
        """The request is done: wake whoever waits, and complete :meth:`future`."""
        if self._error is not None:
            self._notice.set_exception(self._error)
        else:
            self._notice.set_result(self._value)
        self._done.set()

    def future(self) -> concurrent.futures.Future[Any]:
        """A ``concurrent.futures.Future`` that completes with the response when the service is done."""
        if self._lazy and not self._done.is_set():
            self._wait_lazily()
        return self._notice

    def _wait_lazily(self) -> None:
        self._compute()
        delay = self._ready_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if not self._done.is_set():
            self._complete()

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the service (its work, then the rest of the latency), record the wait, then return the
        value or raise."""
        self.waits += 1
        if self._lazy:
            if not self._done.is_set():
                self._wait_lazily()
        else:
            self._done.wait()
        self._log.append(("result", self.name))
        if self._error is not None:
            raise self._error
        return self._value


class SimWorker:
    """The simulated service's one worker thread: it computes responses earliest ready time first, and
    completes each future at its ready time (or as soon as it is computed, when that is later).

    One thread rather than a pool: the pseudo-model is Python, so more threads would only contend for
    the interpreter with the client being measured.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._to_compute: list[tuple[float, int, SimFuture]] = []
        self._to_complete: list[tuple[float, int, SimFuture]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def add(self, future: SimFuture) -> None:
        """Compute ``future``'s response (if any) and complete it at its ready time."""
        with self._cond:
            queue = self._to_complete if future._computed else self._to_compute
            heapq.heappush(queue, (future._ready_at, next(self._order), future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="evsys-sim", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _next(self) -> tuple[bool, SimFuture]:
        with self._cond:
            while True:
                now = time.monotonic()
                if self._to_complete and self._to_complete[0][0] <= now:
                    return False, heapq.heappop(self._to_complete)[2]
                if self._to_compute:
                    return True, heapq.heappop(self._to_compute)[2]
                self._cond.wait(self._to_complete[0][0] - now if self._to_complete else None)

    def _run(self) -> None:
        while True:
            compute, future = self._next()
            if compute:
                future._compute()
                with self._cond:
                    heapq.heappush(self._to_complete, (future._ready_at, next(self._order), future))
            else:
                future._complete()


class SimClock:
    """Draws latencies and keeps a training client's requests in order (one at a time)."""

    def __init__(self, latency: Latency, tally: Tally) -> None:
        self.latency = latency
        self.tally = tally
        self._rng = np.random.default_rng(latency.seed)
        self._lock = threading.Lock()

    def schedule(self, method: str, base_s: float, after: float = 0.0) -> tuple[float, int]:
        """When a request submitted now (not before ``after``) is done, and its index in ``tally.drawn``."""
        with self._lock:
            jitter = self.latency.jitter
            drawn = base_s * (1.0 + float(self._rng.uniform(-jitter, jitter))) if base_s > 0 else 0.0
            now = time.monotonic()
            self.tally.drawn.append((method, now, drawn))
            return max(now, after) + drawn, len(self.tally.drawn) - 1

    def ready_at(self, method: str, base_s: float, after: float = 0.0) -> float:
        """When a request submitted now (not before ``after``) is done."""
        return self.schedule(method, base_s, after)[0]
