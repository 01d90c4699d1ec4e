"""The sampling client's requests of :class:`~evsys.backends.tinker.backend.TinkerBackend`.

``sample`` on the policy's sampling client; ``topk_logprobs`` (top-k prompt logprobs) and
``compute_logprobs`` on the base model's (or the policy's); one request per prompt or sequence, at most
``teacher_concurrency`` in flight. The backend's methods of the same names document the protocol and
call these; SDFT's combined rollouts are in :mod:`.rollouts`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from evsys.backends.tinker.renderers import opens_thinking
from evsys.backends.tinker.service import import_tinker
from evsys.schema.errors import EvsysError
from evsys.schema.protocols import SampledSequence, TopKLogprobs, start_positions

if TYPE_CHECKING:
    from evsys.backends.tinker.backend import TinkerBackend


def stop_for(backend: TinkerBackend, stop: Sequence[str] | None) -> list[str] | list[int] | None:
    """The request's stop: the renderer's stop tokens, as text beside any stop strings."""
    renderer = backend.renderer
    if renderer is None or not renderer.stop_tokens:
        return list(stop) if stop else None
    if not stop:
        return list(renderer.stop_tokens)
    return [*stop, *(renderer.tokenizer.decode([t]) for t in renderer.stop_tokens)]


def sample(
    backend: TinkerBackend,
    prompts: Sequence[Sequence[int]],
    n: int,
    max_tokens: int,
    temperature: float,
    stop: Sequence[str] | None,
    seed: int | None,
) -> list[list[SampledSequence]]:
    """Sample ``n`` completions per prompt from the current weights, all prompts in flight at once."""
    from evsys.backends.tinker.convert import sampling_params

    tinker = import_tinker()
    if not prompts:
        return []
    sampler = backend._current_sampler()
    params = sampling_params(max_tokens, temperature, stop_for(backend, stop), seed)

    def submit_for(prompt: Sequence[int]) -> Callable[[], Any]:
        model_input = tinker.types.ModelInput.from_ints([int(t) for t in prompt])
        return lambda: sampler.sample(prompt=model_input, num_samples=n, sampling_params=params)

    submits = [submit_for(prompt) for prompt in prompts]
    responses = backend._calls.gather("sample from the policy", submits)
    return [samples_of(backend, prompt, response, stop) for prompt, response in zip(prompts, responses, strict=True)]


def samples_of(backend: TinkerBackend, prompt: Sequence[int], response: Any, stop: Sequence[str] | None) -> list[SampledSequence]:
    """The protocol's samples of one ``SampleResponse``; where the prompt opened the thinking block,
    each text starts with it, so whoever scores the text sees the thinking (and its end)."""
    from evsys.backends.tinker.convert import to_sampled_sequence

    tokenizer = backend.tokenizer
    samples = [to_sampled_sequence(seq, tokenizer, stop) for seq in response.sequences]
    if backend._renderer_choice.thinking and opens_thinking(tokenizer.decode(list(prompt))):
        for seq in samples:
            seq.text = "<think>\n" + seq.text
    return samples


def topk_logprobs(
    backend: TinkerBackend, sequences: Sequence[Sequence[int]], k: int, from_position: int | Sequence[int]
) -> list[TopKLogprobs]:
    """Top-k prompt logprobs of each sequence from ``from_position`` on, from the base-model sampling client."""
    from evsys.backends.tinker.convert import topk_from_response

    tinker = import_tinker()
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    starts = start_positions(sequences, from_position, "topk_logprobs")
    asked = [i for i, (seq, start) in enumerate(zip(sequences, starts, strict=True)) if start < len(seq)]
    out = [TopKLogprobs(token_ids=[], logprobs=[]) for _ in sequences]
    if not asked:
        return out
    sampler = backend._teacher_sampler()
    params = tinker.types.SamplingParams(max_tokens=1)

    def submit_for(index: int) -> Callable[[], Any]:
        tokens = [int(t) for t in sequences[index]]
        extra: dict[str, Any] = {}
        if backend._params.teacher_suffix_only:
            extra["prompt_logprobs_last_n"] = len(tokens) - starts[index]
        return lambda: sampler.sample(
            prompt=tinker.types.ModelInput.from_ints(tokens),
            num_samples=1,
            sampling_params=params,
            include_prompt_logprobs=True,
            topk_prompt_logprobs=k,
            **extra,
        )

    responses = backend._calls.gather("score with the teacher (top-k prompt logprobs)", [submit_for(i) for i in asked])
    for index, response in zip(asked, responses, strict=True):
        try:
            out[index] = topk_from_response(response, len(sequences[index]), starts[index], k)
        except RuntimeError as exc:
            raise backend._calls.fail(EvsysError(f"Tinker: teacher scoring failed: {exc}")) from exc
    return out


def compute_logprobs(
    backend: TinkerBackend, sequences: Sequence[Sequence[int]], from_position: int | Sequence[int], base: bool
) -> list[list[float]]:
    """``SamplingClient.compute_logprobs`` of each sequence from ``from_position`` on (base model or policy)."""
    from evsys.backends.tinker.convert import logprobs_from_prompt

    tinker = import_tinker()
    starts = start_positions(sequences, from_position, "compute_logprobs")
    asked = [i for i, (seq, start) in enumerate(zip(sequences, starts, strict=True)) if start < len(seq)]
    out: list[list[float]] = [[] for _ in sequences]
    if not asked:
        return out
    sampler = backend._teacher_sampler() if base else backend._current_sampler()

    def submit_for(index: int) -> Callable[[], Any]:
        tokens = [int(t) for t in sequences[index]]
        extra: dict[str, Any] = {}
        if backend._params.teacher_suffix_only:
            extra["prompt_logprobs_last_n"] = len(tokens) - starts[index]
        return lambda: sampler.compute_logprobs(tinker.types.ModelInput.from_ints(tokens), **extra)

    which = "the base model" if base else "the policy"
    responses = backend._calls.gather(f"score with {which} (prompt logprobs)", [submit_for(i) for i in asked])
    for index, values in zip(asked, responses, strict=True):
        try:
            out[index] = logprobs_from_prompt(values, len(sequences[index]), starts[index])
        except RuntimeError as exc:
            raise backend._calls.fail(EvsysError(f"Tinker: scoring with {which} failed: {exc}")) from exc
    return out
