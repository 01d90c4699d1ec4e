"""Time and bookkeeping of the simulated Tinker service: latencies, futures, fault injection, the tally."""

from __future__ import annotations

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
    """Shaped like the SDK's ``APIFuture``: ``result(timeout=None)`` waits until the simulated service is done.

    With an ``executor`` the response is computed there from submission on (the service works while the
    client does other things); otherwise on the first ``result()``.
    """

    def __init__(
        self, name: str, log: Log, value: Any = None, error: BaseException | None = None, ready_at: float = 0.0,
        executor: Any = None,
    ) -> None:
        self.name = name
        self._log = log
        self._value = value
        self._error = error
        self._computed = False
        self._ready_at = ready_at
        self._task = executor.submit(value) if executor is not None and error is None and callable(value) else None
        self.waits = 0

    def result(self, timeout: float | None = None) -> Any:
        """Compute the value once (the service's work, inside its latency), wait out the rest of the latency,
        record the wait, then return the value or raise."""
        self.waits += 1
        if self._error is None and callable(self._value) and not self._computed:
            self._value = self._task.result() if self._task is not None else self._value()
            self._computed = True
        delay = self._ready_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self._log.append(("result", self.name))
        if self._error is not None:
            raise self._error
        return self._value


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
