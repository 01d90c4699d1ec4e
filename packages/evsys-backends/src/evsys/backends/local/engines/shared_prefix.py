"""Prompts that start alike are prefilled once: the fused decoder's shared-prefix layout.

A batch of rollouts usually shares the start of its prompts: the chat template's system turn for
different questions (24 of ~39 tokens for SmolLM2's template), the whole prompt for a GRPO group. The
fused decoder prefills that shared prefix once, for one row, copies its keys and values into every row,
and prefills only the rest of each prompt. In the KV cache the prefix then sits at positions ``[0, P)``
of every row, followed by that row's left padding and the rest of its prompt; the attention mask hides
the padding, and rotary positions are the tokens' own, so every row computes what it would alone.
"""

from __future__ import annotations

import torch

#: Share a prefix only when it saves at least this many prefill rows (``(batch - 1) * P``): the prefix's
#: own forward reads every weight once more, which costs about as much as prefilling ~30 rows at batch 8.
MIN_ROWS_SAVED = 32


def shared_prefix_length(input_ids: torch.Tensor, valid: torch.Tensor) -> int:
    """How many leading tokens every row's prompt shares (``input_ids`` ``[B, W]`` left-padded, ``valid``
    marking real tokens), capped so every row keeps at least one token of its own; 0 when sharing it
    would save fewer than :data:`MIN_ROWS_SAVED` prefill rows."""
    batch, width = input_ids.shape
    lengths = valid.sum(dim=1)
    shortest = int(lengths.min())
    if batch < 2 or shortest < 2:
        return 0
    starts = width - lengths  # left padding: row i's prompt begins at column starts[i]
    columns = starts[:, None] + torch.arange(shortest - 1, device=input_ids.device)[None]
    heads = input_ids.gather(1, columns)  # the first shortest - 1 tokens of every prompt
    same = (heads == heads[:1]).all(dim=0)
    shared = int(same.long().cumprod(dim=0).sum())
    return shared if (batch - 1) * shared >= MIN_ROWS_SAVED else 0


def shared_layout_valid(valid: torch.Tensor, shared: int) -> torch.Tensor:
    """The real tokens of the cache after a shared prefill of ``shared`` tokens: the prefix at ``[0, shared)``
    in every row, then the row's padding, then the rest of its prompt where the padded prompt had it."""
    if shared == 0:
        return valid
    prefix = torch.ones(valid.shape[0], shared, dtype=valid.dtype, device=valid.device)
    return torch.cat((prefix, valid[:, : valid.shape[1] - shared]), dim=1)
