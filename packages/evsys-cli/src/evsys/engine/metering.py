"""Measure sampling: the run loop hands algorithms a backend whose ``sample`` (and ``sample_and_score``) is
timed and counted.

Tokens per second in the progress line is *sampled tokens per second of sampling*: the tokens
``sample`` returned during a step divided by the seconds spent inside ``sample`` (not the step's
wall time, which also holds teacher scoring and the update). Where a backend samples and scores in
one call (``sample_and_score``: Tinker's SDFT rollouts), the seconds are that call's, scoring that
overlaps the sampling included. It is logged as ``train/sampled_tokens_per_s`` on steps that sample
(SDFT and GRPO rollouts; SFT does not sample).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from evsys.schema.plugin_bases import BaseBackend
from evsys.schema.protocols import Backend, SampledSequence, TopKLogprobs


class MeteredBackend:
    """Delegates everything to ``backend``; ``sample`` is timed and its tokens counted.

    ``on_first_sample`` is called once, with a description, before the first ``sample`` call
    (the progress line "first rollout ...").
    """

    def __init__(self, backend: Backend, on_first_sample: Callable[[str], None] | None = None) -> None:
        self.backend = backend
        self.sampled_tokens = 0
        self.sampling_seconds = 0.0
        self._on_first_sample = on_first_sample

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def _announce(self, count: int, n: Any, max_tokens: Any) -> None:
        announce, self._on_first_sample = self._on_first_sample, None
        if announce is not None:
            announce(f"{count} prompt{'s' if count != 1 else ''} x {n} sample{'s' if n != 1 else ''}, up to {max_tokens} new tokens each")

    def _count(self, started: float, groups: Any) -> None:
        self.sampling_seconds += time.perf_counter() - started
        self.sampled_tokens += sum(len(sequence.tokens) for group in groups for sequence in group)

    def sample(self, prompts: Any, *args: Any, **kwargs: Any) -> Any:
        """The backend's ``sample``, timed; the returned sequences' tokens are counted."""
        self._announce(len(prompts), kwargs.get("n", args[0] if args else 1), kwargs.get("max_tokens", args[1] if len(args) > 1 else 64))
        started = time.perf_counter()
        groups = self.backend.sample(prompts, *args, **kwargs)
        self._count(started, groups)
        return groups

    def sample_and_score(
        self, prompts: Any, prefixes: Any, k: int, **options: Any
    ) -> tuple[list[list[SampledSequence]], list[list[TopKLogprobs | None]]]:
        """The backend's ``sample_and_score``, its sampled tokens counted. A backend with its own is timed
        whole (its scoring overlaps its sampling); else the default runs, whose ``sample`` goes through
        this meter."""
        if type(self.backend).sample_and_score is BaseBackend.sample_and_score:
            return BaseBackend.sample_and_score(self, prompts, prefixes, k, **options)  # type: ignore[arg-type]
        self._announce(len(prompts), options.get("n", 1), options.get("max_tokens", 64))
        started = time.perf_counter()
        groups, scores = self.backend.sample_and_score(prompts, prefixes, k, **options)
        self._count(started, groups)
        return groups, scores

    def take(self) -> tuple[int, float]:
        """``(tokens, seconds)`` sampled since the last call, and start counting afresh."""
        counted = (self.sampled_tokens, self.sampling_seconds)
        self.sampled_tokens, self.sampling_seconds = 0, 0.0
        return counted


def sampling_metrics(meter: MeteredBackend) -> dict[str, float]:
    """``{"train/sampled_tokens_per_s": ...}`` for what ``meter`` counted since the last call (empty if nothing was sampled)."""
    tokens, seconds = meter.take()
    if tokens <= 0 or seconds <= 0:
        return {}
    return {"train/sampled_tokens_per_s": tokens / seconds}
