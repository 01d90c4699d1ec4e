"""Drawing one token per row from next-token probabilities, cheaply on a CPU."""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Vocabulary entries per block of the two-level inverse CDF.
BLOCK = 256


def inverse_cdf_sample(probs: torch.Tensor, generator: torch.Generator, block: int = BLOCK) -> torch.Tensor:
    """One token index per row of ``probs`` ``[B, V]`` (non-negative, any scale), one uniform draw per row.

    Inverse-CDF sampling in two levels: the row's mass per block of ``block`` entries (summed in float64)
    picks a block, then the cumulative mass inside that block picks the entry. It draws the token the
    full float64 CDF would draw for the same uniform (up to float64 rounding at a boundary), without a
    float64 cumsum over the whole vocabulary: at batch 8 and 49k entries that pass took ~2 ms per decoded
    token on a CPU. ``torch.multinomial`` would draw one exponential per entry (~1 ms per row and token).
    """
    rows, vocab = probs.shape
    pad = (-vocab) % block
    blocks = (F.pad(probs, (0, pad)) if pad else probs).view(rows, -1, block)
    mass = blocks.sum(dim=-1, dtype=torch.float64)  # [B, V / block]
    cdf = mass.cumsum(dim=-1)
    u = torch.rand((rows, 1), generator=generator, dtype=torch.float64, device=probs.device) * cdf[:, -1:]
    chosen = torch.searchsorted(cdf, u, right=True).clamp_(max=cdf.shape[1] - 1)  # [B, 1]; an empty block never wins
    into = u - (cdf.gather(1, chosen) - mass.gather(1, chosen))  # how far into the chosen block u falls
    inner = blocks[torch.arange(rows, device=probs.device), chosen.squeeze(1)].cumsum(dim=-1, dtype=torch.float64)
    entry = torch.searchsorted(inner, into, right=True).clamp_(max=block - 1)
    return (chosen * block + entry).squeeze(1).clamp_(max=vocab - 1)
