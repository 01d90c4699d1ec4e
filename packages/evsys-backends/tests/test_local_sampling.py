"""The two-level inverse-CDF sampler draws what the full float64 CDF draws, with the right frequencies."""

from __future__ import annotations

import torch

from evsys.backends.local.sampling import inverse_cdf_sample


def _distribution(vocab: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(vocab, generator=gen) * 3
    logits[[5, vocab - 1]] += 6.0  # two spikes, one in the last, partly padded block
    probs = torch.softmax(logits, dim=-1)
    probs[17:300] = 0.0  # a whole empty block and parts of two others
    return probs


def test_same_token_as_the_full_float64_cdf_for_the_same_uniform() -> None:
    probs = _distribution(1000, 0).expand(4000, -1).contiguous()  # 1000 = 3 blocks of 256 + 232
    got = inverse_cdf_sample(probs, torch.Generator().manual_seed(7), block=256)
    u = torch.rand((4000, 1), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    cdf = probs.double().cumsum(dim=-1)
    want = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(1)
    assert torch.equal(got, want)


def test_frequencies_match_the_probabilities_and_empty_entries_never_come_up() -> None:
    probs = _distribution(600, 1)
    draws = 200_000
    tokens = inverse_cdf_sample(probs.expand(draws, -1), torch.Generator().manual_seed(3), block=64)
    assert int(tokens.min()) >= 0 and int(tokens.max()) < 600
    counts = torch.bincount(tokens, minlength=600).double()
    assert counts[17:300].sum() == 0
    expected = probs.double() / probs.sum() * draws
    sigma = expected.clamp(min=1.0).sqrt()
    assert float(((counts - expected).abs() / sigma).max()) < 5.0  # every entry within 5 standard deviations
