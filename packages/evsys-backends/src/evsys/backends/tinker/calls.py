"""Requests to the Tinker service: waiting, retrying, keeping several in flight, and lazy training results.

:class:`ServiceCalls` is how :class:`~evsys.backends.tinker.backend.TinkerBackend` sends every request:
idempotent ones are retried on a transient error (:mod:`.retry`), a request that changes the weights
only while it is being submitted. :class:`PendingForwardBackwardResult` is what ``forward_backward``
returns right after submitting; :class:`PendingResults` holds those not yet read.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from evsys.backends.tinker.retry import RetryPolicy, call_with_retries, describe, is_service_error
from evsys.schema.errors import EvsysError
from evsys.schema.protocols import ForwardBackwardResult

T = TypeVar("T")


class PendingForwardBackwardResult(ForwardBackwardResult):
    """A :class:`ForwardBackwardResult` whose ``loss_sum`` and ``metrics`` wait for the service on first read.

    ``forward_backward`` returns one right after submitting the request, so the ``optim_step`` that
    usually follows is submitted before anything waits; ``optim_step`` resolves it. Read the loss
    after ``optim_step`` to keep the two requests back to back.
    """

    def __init__(self, resolve: Callable[[], ForwardBackwardResult]) -> None:
        self._resolve = resolve
        self._value: ForwardBackwardResult | None = None
        self._error: Exception | None = None
        self._lock = threading.Lock()
        self.owner = threading.get_ident()

    def result(self) -> ForwardBackwardResult:
        """Wait for the service (once) and return the plain result; re-raises a failure on every call."""
        with self._lock:
            if self._value is None and self._error is None:
                try:
                    self._value = self._resolve()
                except Exception as exc:
                    self._error = exc
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value

    @property
    def resolved(self) -> bool:
        """Whether the result (or its failure) has arrived."""
        return self._value is not None or self._error is not None

    @property  # type: ignore[override]
    def loss_sum(self) -> float:
        """The loss as a raw sum over weighted tokens (waits for the service)."""
        return self.result().loss_sum

    @loss_sum.setter
    def loss_sum(self, value: float) -> None:
        self.result().loss_sum = value

    @property  # type: ignore[override]
    def metrics(self) -> dict[str, float]:
        """The service's metrics of this forward_backward (waits for the service)."""
        return self.result().metrics

    @metrics.setter
    def metrics(self, value: dict[str, float]) -> None:
        self.result().metrics = value

    def __repr__(self) -> str:
        if self._value is not None:
            return f"PendingForwardBackwardResult(loss_sum={self._value.loss_sum!r}, metrics={self._value.metrics!r})"
        return "PendingForwardBackwardResult(<failed>)" if self._error else "PendingForwardBackwardResult(<pending>)"


class PendingResults:
    """The forward_backward results submitted and not yet resolved, shared by the threads of a run."""

    def __init__(self) -> None:
        self._pending: list[PendingForwardBackwardResult] = []
        self._lock = threading.Lock()

    def add(self, pending: PendingForwardBackwardResult) -> None:
        """Hold ``pending`` until :meth:`drain` resolves it."""
        with self._lock:
            self._pending.append(pending)

    def drain(self, *, own: bool = False) -> None:
        """Resolve every pending result (``own``: this thread's only), surfacing a failure."""
        while True:
            with self._lock:
                mine = [p for p in self._pending if not own or p.owner == threading.get_ident()]
                if not mine:
                    return
                self._pending.remove(mine[0])
            mine[0].result()

    def clear(self) -> None:
        """Forget the pending results (after a failure while closing)."""
        self._pending.clear()


def concurrent_future(future: Any) -> concurrent.futures.Future[Any] | None:
    """The ``concurrent.futures.Future`` behind a request's future (the SDK's ``APIFuture.future()``), or None."""
    if isinstance(future, concurrent.futures.Future) and not callable(getattr(future, "future", None)):
        return future
    getter = getattr(future, "future", None)
    if not callable(getter):
        return None
    try:
        inner = getter()
    except AttributeError:  # a wrapper around a future that has none
        return None
    return inner if isinstance(inner, concurrent.futures.Future) else None


def raiser(error: BaseException) -> Callable[[], Any]:
    """A thunk that raises ``error``."""

    def get() -> Any:
        raise error

    return get


class ServiceCalls:
    """Submit, wait for and retry service requests; ``failed`` turns true once one fails for good.

    ``request_timeout_s`` bounds each wait (None: no bound); ``concurrency`` is how many requests
    :meth:`gather` keeps in flight.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        sleep: Callable[[float], None],
        *,
        request_timeout_s: float | None,
        concurrency: int,
    ) -> None:
        self.policy = policy
        self.sleep = sleep
        self.request_timeout_s = request_timeout_s
        self.concurrency = concurrency
        self.failed = False

    def on_done(self, future: Any, callback: Callable[[Callable[[], Any]], None], waiters: Any) -> None:
        """Call ``callback(get)`` once ``future`` is done, where ``get()`` returns its result or raises.

        The SDK's futures (and the simulator's) notify through their ``concurrent.futures.Future``, so no
        thread waits; any other future is waited for on the ``waiters`` executor.
        """
        inner = concurrent_future(future)
        if inner is not None:
            inner.add_done_callback(lambda _: callback(lambda: self.wait(future)))
            return

        def wait_then_call() -> None:
            try:
                value = self.wait(future)
            except Exception as exc:
                callback(raiser(exc))
                return
            callback(lambda: value)

        waiters.submit(wait_then_call)

    def wait(self, future: Any) -> Any:
        """The result of ``future``, waiting at most ``request_timeout_s``."""
        timeout = self.request_timeout_s
        return future.result(timeout) if timeout is not None else future.result()

    def fail(self, error: EvsysError) -> EvsysError:
        """Mark the session failed and return ``error`` (to raise)."""
        self.failed = True
        return error

    def retrying(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()``, retried on a transient error by the policy; a final failure marks the session failed."""
        try:
            return call_with_retries(fn, what=what, policy=self.policy, sleep=self.sleep)
        except EvsysError:
            self.failed = True
            raise

    def call(self, what: str, submit: Callable[[], Any]) -> Any:
        """Submit and wait, retrying both on a transient error (idempotent requests only)."""
        return self.retrying(what, lambda: self.wait(submit()))

    def submit_once(self, what: str, submit: Callable[[], Any]) -> Any:
        """Submit a request that changes the weights; retries only failures to submit it."""
        return self.retrying(f"submit {what}", submit)

    def wait_once(self, what: str, future: Any) -> Any:
        """Wait for a request that changes the weights: a failure is not retried (it may have applied)."""
        try:
            return self.wait(future)
        except Exception as exc:
            if not is_service_error(exc):
                raise
            raise self.fail(
                EvsysError(
                    f"Tinker: {what} failed: {describe(exc)}; the weights may be partly updated, "
                    "so it is not retried: resume the run from its last checkpoint"
                )
            ) from exc

    def gather(self, what: str, submits: Sequence[Callable[[], Any]]) -> list[Any]:
        """Run idempotent requests with up to ``concurrency`` in flight, in order; retry each alone."""
        results: list[Any] = [None] * len(submits)
        inflight: deque[tuple[int, Any]] = deque()

        def finish(index: int, first: Any) -> None:
            queue = [first]

            def attempt() -> Any:
                if queue:
                    item = queue.pop()
                    if isinstance(item, BaseException):
                        raise item
                    return self.wait(item)
                return self.wait(submits[index]())

            results[index] = self.retrying(what, attempt)

        for index, submit in enumerate(submits):
            if len(inflight) >= self.concurrency:
                finish(*inflight.popleft())
            try:
                inflight.append((index, submit()))
            except Exception as exc:
                inflight.append((index, exc))
        while inflight:
            finish(*inflight.popleft())
        return results
