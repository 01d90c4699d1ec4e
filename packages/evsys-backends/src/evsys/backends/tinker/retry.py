"""Bounded retries with exponential backoff, and the SDK errors that count as transient."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from evsys.schema.errors import EvsysError

logger = logging.getLogger("evsys.backends.tinker")

T = TypeVar("T")
_RETRYABLE_STATUS = (408, 409, 429)


@dataclass(frozen=True)
class RetryPolicy:
    """At most ``max_retries`` retries, waiting ``backoff_s * 2**i`` (capped at ``backoff_max_s``),
    and never past ``total_s`` seconds since the first attempt."""

    max_retries: int = 5
    backoff_s: float = 2.0
    backoff_max_s: float = 60.0
    total_s: float = 600.0

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        return min(self.backoff_s * (2 ** (retry - 1)), self.backoff_max_s)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is worth retrying: a timeout, a lost connection, 408/409/429/5xx, a server-side failure."""
    if isinstance(exc, (TimeoutError, concurrent.futures.TimeoutError, asyncio.TimeoutError, ConnectionError)):
        return True
    try:
        import tinker
        from tinker.lib.retryable_exception import RetryableException
        from tinker.types.request_error_category import RequestErrorCategory
    except ImportError:  # pragma: no cover - the backend cannot run without the SDK anyway
        return False
    if isinstance(exc, (tinker.APIConnectionError, RetryableException)):
        return True
    if isinstance(exc, tinker.APIStatusError):
        code = exc.status_code
        return code in _RETRYABLE_STATUS or 500 <= code < 600
    if isinstance(exc, tinker.RequestFailedError):
        return exc.category == RequestErrorCategory.Server
    return False


def is_service_error(exc: BaseException) -> bool:
    """Whether ``exc`` came from the service or the SDK (reported as one line), not from a bug here."""
    if isinstance(exc, (TimeoutError, concurrent.futures.TimeoutError, ConnectionError)):
        return True
    try:
        import tinker
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, tinker.TinkerError)


def redact(text: str) -> str:
    """``text`` with the API key (if the environment holds one) replaced by ``***``."""
    key = os.environ.get("TINKER_API_KEY", "").strip()
    return text.replace(key, "***") if key else text


def describe(exc: BaseException) -> str:
    """One line naming the error: its type and first message line, with any API key redacted."""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return redact(text)


def call_with_retries(
    fn: Callable[[], T],
    *,
    what: str,
    policy: RetryPolicy,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call ``fn`` until it succeeds, retrying transient errors within ``policy``.

    A transient error past the bound, or a non-transient service error, raises :class:`EvsysError`
    (one line naming ``what`` and the cause); any other exception propagates unchanged.
    """
    start = clock()
    retries = 0
    slept = 0.0
    while True:
        try:
            return fn()
        except EvsysError:
            raise
        except Exception as exc:
            if not is_transient(exc):
                if is_service_error(exc):
                    raise EvsysError(f"Tinker: {what} failed: {describe(exc)}") from exc
                raise
            retries += 1
            delay = policy.delay(retries)
            elapsed = max(clock() - start, slept)
            if retries > policy.max_retries or elapsed + delay > policy.total_s:
                raise EvsysError(
                    f"Tinker: {what} failed after {retries} attempts in {elapsed:.0f}s "
                    f"(transient errors; raise backend.params.max_retries / retry_total_s to wait longer): "
                    f"{describe(exc)}"
                ) from exc
            logger.warning(
                "Tinker: %s failed (%s); retry %d/%d in %.1fs", what, describe(exc), retries, policy.max_retries, delay
            )
            sleep(delay)
            slept += delay
