"""SDFT's rollouts on Tinker: every sample request at once, each rollout's teacher scoring the moment it returns.

:func:`sample_and_score` is :meth:`TinkerBackend.sample_and_score`; it lives here to keep the backend
module to the protocol's mapping.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from evsys.backends.tinker.sampling import samples_of, stop_for
from evsys.backends.tinker.service import import_tinker
from evsys.schema.errors import EvsysError
from evsys.schema.protocols import SampledSequence, TopKLogprobs

if TYPE_CHECKING:
    from evsys.backends.tinker.backend import TinkerBackend


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

    def score(prefix: list[int], tokens: list[int]) -> Callable[[], Any]:
        sequence = prefix + tokens
        extra: dict[str, Any] = {"prompt_logprobs_last_n": len(tokens)} if backend._params.teacher_suffix_only else {}
        return lambda: teacher.sample(
            prompt=tinker.types.ModelInput.from_ints(sequence), num_samples=1, sampling_params=score_params,
            include_prompt_logprobs=True, topk_prompt_logprobs=k, **extra,
        )

    def rollout(index: int, future: Any) -> tuple[list[SampledSequence], list[TopKLogprobs | None]]:
        queue = [future]

        def attempt() -> Any:
            item = queue.pop() if queue else None
            if isinstance(item, BaseException):
                raise item
            model_input = tinker.types.ModelInput.from_ints([int(t) for t in prompts[index]])
            return backend._calls.wait(item if item is not None else sampler.sample(prompt=model_input, num_samples=n, sampling_params=params))

        response = backend._calls.retrying("sample from the policy", attempt)
        samples = samples_of(backend, prompts[index], response, stop)
        prefix = [int(t) for t in prefixes[index]]
        asked = [j for j, sample in enumerate(samples) if sample.tokens]
        answers = backend._calls.gather("score with the teacher (top-k prompt logprobs)", [score(prefix, samples[j].tokens) for j in asked])
        scores: list[TopKLogprobs | None] = [None] * len(samples)
        for j, answer in zip(asked, answers, strict=True):
            length = len(prefix) + len(samples[j].tokens)
            try:
                scores[j] = topk_from_response(answer, length, len(prefix), k)
            except RuntimeError as exc:
                raise backend._calls.fail(EvsysError(f"Tinker: teacher scoring failed: {exc}")) from exc
        return samples, scores

    futures: list[Any] = []
    for prompt in prompts:
        model_input = tinker.types.ModelInput.from_ints([int(t) for t in prompt])
        try:
            futures.append(sampler.sample(prompt=model_input, num_samples=n, sampling_params=params))
        except Exception as exc:
            futures.append(exc)
    if backend._pool is None or backend._pool_size < len(prompts):
        if backend._pool is not None:
            backend._pool.shutdown(wait=False)
        backend._pool_size = min(max(len(prompts), 32), backend._params.teacher_concurrency)
        backend._pool = ThreadPoolExecutor(max_workers=backend._pool_size, thread_name_prefix="evsys-tinker")
    results = list(backend._pool.map(rollout, range(len(prompts)), futures))
    return [r[0] for r in results], [r[1] for r in results]

