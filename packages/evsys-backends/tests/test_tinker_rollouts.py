"""SDFT's rollouts on Tinker (``sample_and_score``): each scoring goes out the moment its sample returns.

The structural tests hold the policy's sample futures until the test releases them, so what they check
does not depend on how fast this machine is: a client that waited for other rollouts (or for a thread's
turn) before scoring would never submit the scoring while the others are held.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import Any

import httpx
import pytest
import tinker

from evsys.backends.tinker.simulator import Faults, SimulatedService
from evsys.backends.tinker.testing import simulated_backend

PROMPTS = [[11, 12], [13, 14, 15], [16]]
PREFIXES = [[20, 21, 22], [23], [24, 25]]
WATCHDOG_S = 20.0
"""Longest wait for an event that must happen; only a broken client ever waits this long."""


class HeldFuture:
    """The SDK's future shape around a simulator future that completes only when the test calls :meth:`release`."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._gate: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def release(self) -> None:
        try:
            self._gate.set_result(self._inner.result())
        except Exception as exc:
            self._gate.set_exception(exc)

    def future(self) -> concurrent.futures.Future[Any]:
        return self._gate

    def result(self, timeout: float | None = None) -> Any:
        return self._gate.result(timeout)


class HeldSampler:
    """A policy sampling client whose sample futures are held (the first ``hold`` of them)."""

    def __init__(self, inner: Any, hold: int) -> None:
        self._inner = inner
        self.held: list[HeldFuture] = []
        self._hold = hold
        self.submitted = threading.Semaphore(0)

    def sample(self, **request: Any) -> Any:
        future = self._inner.sample(**request)
        if len(self.held) >= self._hold:
            return future
        held = HeldFuture(future)
        self.held.append(held)
        self.submitted.release()
        return held


def wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WATCHDOG_S
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.001)


def scorings(service: SimulatedService) -> list[list[int]]:
    return [r["prompt"].to_ints() for c in service.sampling_clients for r in c.requests]


def run_held(backend: Any, hold: int) -> tuple[HeldSampler, dict[str, Any], threading.Thread]:
    sampler = HeldSampler(backend._current_sampler(), hold)
    backend._current_sampler = lambda: sampler
    out: dict[str, Any] = {}

    def call() -> None:
        try:
            out["value"] = backend.sample_and_score(PROMPTS, PREFIXES, 3, n=2, max_tokens=6, temperature=1.0, seed=4)
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return sampler, out, thread


def test_a_rollouts_scoring_is_submitted_while_the_other_rollouts_are_still_sampling() -> None:
    backend, service = simulated_backend()
    sampler, out, thread = run_held(backend, hold=len(PROMPTS))
    wait_until(lambda: len(sampler.held) == len(PROMPTS), "every sample request in flight before any returns")
    sampler.held[1].release()
    wait_until(lambda: len(scorings(service)) == 2, "the scorings of the rollout that returned")
    assert all(s[: len(PREFIXES[1])] == PREFIXES[1] for s in scorings(service))
    sampler.held[2].release()
    wait_until(lambda: len(scorings(service)) == 4, "the scorings of the next rollout that returned")
    assert scorings(service)[2][: len(PREFIXES[2])] == PREFIXES[2]
    assert thread.is_alive()  # the first rollout is still held
    sampler.held[0].release()
    thread.join(WATCHDOG_S)
    assert "error" not in out

    other, _ = simulated_backend()
    expected = other.sample_and_score(PROMPTS, PREFIXES, 3, n=2, max_tokens=6, temperature=1.0, seed=4)
    assert out["value"] == expected  # the order of return changes nothing in the results


def test_scoring_requests_are_submitted_by_the_calling_thread() -> None:
    """No thread per rollout: the caller's thread submits every request, woken by the futures' done callbacks."""
    backend, _ = simulated_backend()
    teacher = backend._teacher_sampler()
    threads: list[int] = []
    original = teacher.sample

    def sample(**request: Any) -> Any:
        threads.append(threading.get_ident())
        return original(**request)

    teacher.sample = sample
    sampler, out, thread = run_held(backend, hold=len(PROMPTS))
    wait_until(lambda: len(sampler.held) == len(PROMPTS), "every sample request in flight")
    for held in reversed(sampler.held):
        held.release()
    thread.join(WATCHDOG_S)
    assert "error" not in out
    assert len(threads) == 6 and set(threads) == {thread.ident}


@pytest.mark.parametrize("where", ["submit", "result"])
def test_a_failed_request_is_retried_alone_while_the_others_go_on(where: str) -> None:
    busy = tinker.InternalServerError("busy", response=httpx.Response(503, request=httpx.Request("POST", "http://x")), body=None)
    faults = Faults(fail_submit={"sample": [busy]}) if where == "submit" else Faults(fail_result={"sample": [busy]})
    backend, service = simulated_backend(faults=faults)
    got = backend.sample_and_score(PROMPTS, PREFIXES, 3, n=2, max_tokens=6, temperature=1.0, seed=4)
    other, _ = simulated_backend()
    assert got == other.sample_and_score(PROMPTS, PREFIXES, 3, n=2, max_tokens=6, temperature=1.0, seed=4)
    policy = service.training_clients[0].samplers[0].requests
    sent = [r["prompt"].to_ints() for r in policy]
    again = [PROMPTS[0]] if where == "result" else []  # a request that failed to submit never reached the service
    assert sorted(sent) == sorted([*PROMPTS, *again])
    assert backend.sleeps == [2.0]  # one backoff, by the retry policy


def test_a_result_that_never_comes_is_retried_after_request_timeout_s() -> None:
    backend, service = simulated_backend(request_timeout_s=0.2)
    _, out, thread = run_held(backend, hold=1)  # the first sample request never returns
    thread.join(WATCHDOG_S)
    assert "error" not in out
    other, _ = simulated_backend()
    assert out["value"] == other.sample_and_score(PROMPTS, PREFIXES, 3, n=2, max_tokens=6, temperature=1.0, seed=4)
    policy = service.training_clients[0].samplers[0].requests
    assert [r["prompt"].to_ints() for r in policy] == [*PROMPTS, PROMPTS[0]]  # the held one, sent again
    assert backend.sleeps == [2.0]
