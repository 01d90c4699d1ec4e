"""SDFT's rollouts on Tinker: every sample request at once, each rollout's teacher scoring the moment it returns.

:func:`sample_and_score` is :meth:`TinkerBackend.sample_and_score`; it lives here to keep the backend
module to the protocol's mapping. One thread (the caller's) drives the whole batch: each request's
future reports its completion through a done callback (:meth:`ServiceCalls.on_done`), so the scoring
requests of a returned sample go out as soon as the caller's thread reads that event, with no thread
per rollout waiting its turn for the interpreter. A failed request is retried on a thread of its own,
with the backend's retry policy, while the others go on.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evsys.backends.tinker.calls import raiser
from evsys.backends.tinker.sampling import samples_of, stop_for
from evsys.backends.tinker.service import import_tinker
from evsys.schema.errors import EvsysError
from evsys.schema.protocols import SampledSequence, TopKLogprobs

if TYPE_CHECKING:
    from evsys.backends.tinker.backend import TinkerBackend

SAMPLE = "sample from the policy"
SCORE = "score with the teacher (top-k prompt logprobs)"


@dataclass
class _Request:
    """A request in flight: what it is for (``kind``, prompt ``index``, completion ``slot``), how to send it
    again, and when its wait runs out (None: no bound, or it is being retried)."""

    kind: str
    index: int
    slot: int
    what: str
    submit: Callable[[], Any]
    deadline: float | None


class _Batch:
    """The requests of one :func:`sample_and_score` call and the events of their completion."""

    def __init__(self, backend: TinkerBackend) -> None:
        self.backend = backend
        self.calls = backend._calls
        self.events: queue.SimpleQueue[tuple[int, Callable[[], Any], bool]] = queue.SimpleQueue()
        self.live: dict[int, _Request] = {}
        self._ids = itertools.count()

    def send(self, kind: str, index: int, slot: int, what: str, submit: Callable[[], Any]) -> None:
        """Submit a request now; its completion becomes an event."""
        token = next(self._ids)
        timeout = self.calls.request_timeout_s
        request = _Request(kind, index, slot, what, submit, None)
        self.live[token] = request
        try:
            future = submit()
        except Exception as exc:
            self.retry(token, exc)
            return
        if timeout is not None:
            request.deadline = time.monotonic() + timeout
        self.calls.on_done(future, lambda get: self.events.put((token, get, False)), waiters(self.backend))

    def retry(self, token: int, error: BaseException) -> None:
        """Retry request ``token`` (which failed with ``error``) by the backend's policy, on a thread of its own."""
        request = self.live[token]
        request.deadline = None
        first = [error]

        def attempt() -> Any:
            if first:
                raise first.pop()
            return self.calls.wait(request.submit())

        def run() -> None:
            try:
                value = self.calls.retrying(request.what, attempt)
            except BaseException as exc:
                self.events.put((token, raiser(exc), True))
                return
            self.events.put((token, lambda: value, True))

        threading.Thread(target=run, name="evsys-tinker-retry", daemon=True).start()

    def next_done(self) -> tuple[_Request, Any] | None:
        """The next request done and its result; None when a wait ran out (that request is being retried)."""
        deadlines = [r.deadline for r in self.live.values() if r.deadline is not None]
        try:
            token, get, final = self.events.get(timeout=max(0.0, min(deadlines) - time.monotonic()) if deadlines else None)
        except queue.Empty:
            now = time.monotonic()
            for token, request in list(self.live.items()):
                if request.deadline is not None and request.deadline <= now:
                    self.retry(token, TimeoutError(f"no result in {self.calls.request_timeout_s}s"))
            return None
        request = self.live.get(token)
        if request is None:
            return None  # a result that came after its wait ran out: the retry answers instead
        try:
            value = get()
        except Exception as exc:
            if final:
                raise
            self.retry(token, exc)
            return None
        del self.live[token]
        return request, value


def waiters(backend: TinkerBackend) -> ThreadPoolExecutor:
    """Threads that wait for futures without a done callback (test doubles; the SDK's futures have one)."""
    if backend._pool is None:
        backend._pool_size = backend._params.teacher_concurrency
        backend._pool = ThreadPoolExecutor(max_workers=backend._pool_size, thread_name_prefix="evsys-tinker")
    return backend._pool  # type: ignore[no-any-return]


def sample_and_score(
    backend: TinkerBackend,
    prompts: Sequence[Sequence[int]],
    prefixes: Sequence[Sequence[int]],
    k: int,
    n: int,
    max_tokens: int,
    temperature: float,
    stop: Sequence[str] | None,
    seed: int | None,
) -> tuple[list[list[SampledSequence]], list[list[TopKLogprobs | None]]]:
    """Sample ``n`` completions per prompt on ``backend``; score each ``prefixes[i] + completion`` as it returns."""
    from evsys.backends.tinker.convert import sampling_params, topk_from_response

    tinker = import_tinker()
    if len(prefixes) != len(prompts):
        raise ValueError(f"{len(prefixes)} prefixes for {len(prompts)} prompts")
    if not prompts:
        return [], []
    sampler = backend._current_sampler()
    teacher = backend._teacher_sampler()
    params = sampling_params(max_tokens, temperature, stop_for(backend, stop), seed)
    score_params = tinker.types.SamplingParams(max_tokens=1)
    suffix_only = backend._params.teacher_suffix_only
    heads = [[int(t) for t in prefix] for prefix in prefixes]

    def sample(index: int) -> Callable[[], Any]:
        model_input = tinker.types.ModelInput.from_ints([int(t) for t in prompts[index]])
        return lambda: sampler.sample(prompt=model_input, num_samples=n, sampling_params=params)

    def score(index: int, tokens: list[int]) -> Callable[[], Any]:
        model_input = tinker.types.ModelInput.from_ints(heads[index] + tokens)
        extra: dict[str, Any] = {"prompt_logprobs_last_n": len(tokens)} if suffix_only else {}
        return lambda: teacher.sample(
            prompt=model_input, num_samples=1, sampling_params=score_params,
            include_prompt_logprobs=True, topk_prompt_logprobs=k, **extra,
        )

    groups: list[list[SampledSequence]] = [[] for _ in prompts]
    scores: list[list[TopKLogprobs | None]] = [[] for _ in prompts]
    batch = _Batch(backend)
    for index in range(len(prompts)):
        batch.send("sample", index, 0, SAMPLE, sample(index))
    while batch.live:
        done = batch.next_done()
        if done is None:
            continue
        request, response = done
        i = request.index
        if request.kind == "sample":
            groups[i] = samples_of(backend, prompts[i], response, stop)
            scores[i] = [None] * len(groups[i])
            for j, sampled in enumerate(groups[i]):
                if sampled.tokens:
                    batch.send("score", i, j, SCORE, score(i, list(sampled.tokens)))
            continue
        length = len(heads[i]) + len(groups[i][request.slot].tokens)
        try:
            scores[i][request.slot] = topk_from_response(response, length, len(heads[i]), k)
        except RuntimeError as exc:
            raise backend._calls.fail(EvsysError(f"Tinker: teacher scoring failed: {exc}")) from exc
    return groups, scores
