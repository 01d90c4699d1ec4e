"""The run loop's sampling meter (tok/s) counts what every sampling path returns."""

from __future__ import annotations

from evsys.backends.tinker.testing import SampleThenScore, simulated_backend
from evsys.engine.metering import MeteredBackend, sampling_metrics


def test_tokens_sampled_through_sample_and_score_are_metered() -> None:
    backend, _ = simulated_backend()
    announced: list[str] = []
    meter = MeteredBackend(backend, announced.append)
    groups, scores = meter.sample_and_score([[11, 12], [13]], [[20], [21, 22]], k=2, n=3, max_tokens=5, temperature=1.0, seed=1)
    sampled = sum(len(s.tokens) for g in groups for s in g)
    assert sampled > 0 and meter.sampled_tokens == sampled and meter.sampling_seconds > 0
    assert announced == ["2 prompts x 3 samples, up to 5 new tokens each"]
    assert all(score is not None for row, g in zip(scores, groups, strict=True) for score, s in zip(row, g, strict=True) if s.tokens)
    seconds = meter.sampling_seconds
    assert sampling_metrics(meter) == {"train/sampled_tokens_per_s": sampled / seconds}
    assert meter.take() == (0, 0.0)


def test_a_backend_without_sample_and_score_is_metered_through_sample() -> None:
    backend, _ = simulated_backend()
    meter = MeteredBackend(SampleThenScore(backend))
    groups, _ = meter.sample_and_score([[11, 12]], [[20]], k=2, n=2, max_tokens=5, temperature=1.0, seed=1)
    assert meter.sampled_tokens == sum(len(s.tokens) for g in groups for s in g) > 0
