"""Scoring sequences with the local backend's model: exact per-token logprobs and top-k next-token logprobs."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch

from evsys.backends.local.loading import Policy, chunks
from evsys.schema.errors import EvsysError
from evsys.schema.protocols import TopKLogprobs, start_positions


def topk_logprobs(
    policy: Policy,
    sequences: Sequence[Sequence[int]],
    k: int,
    from_position: int | Sequence[int],
    *,
    micro_batch_size: int | None,
    logits_chunk_size: int,
) -> list[TopKLogprobs]:
    """Top-k of ``p(. | s[:i])`` for each ``i`` in ``[from_position, len(s))`` under the frozen base model
    (adapter disabled), from the hidden state at index ``i - 1``."""
    starts = start_positions(sequences, from_position, "topk_logprobs")
    vocab = policy.causal_lm.get_output_embeddings().weight.shape[0]
    if not 1 <= k <= vocab:
        raise EvsysError(f"topk_logprobs k must be in [1, {vocab}], got {k}")
    results: list[TopKLogprobs] = [TopKLogprobs(token_ids=[], logprobs=[]) for _ in sequences]
    todo = [i for i, s in enumerate(sequences) if starts[i] < len(s)]
    for chunk in chunks(todo, micro_batch_size):
        seqs, chunk_starts = [list(sequences[i]) for i in chunk], [starts[i] for i in chunk]
        scored = score_batch(policy, seqs, chunk_starts, k, base=True, logits_chunk_size=logits_chunk_size)
        for i, (ids, lps) in zip(chunk, scored, strict=True):
            results[i] = TopKLogprobs(token_ids=ids, logprobs=lps)
    policy.release_memory()
    return results


def compute_logprobs(
    policy: Policy,
    sequences: Sequence[Sequence[int]],
    from_position: int | Sequence[int],
    base: bool,
    *,
    micro_batch_size: int | None,
    logits_chunk_size: int,
) -> list[list[float]]:
    """``log p(s[i] | s[:i])`` for ``i`` in ``[from_position, len(s))`` under the frozen base model
    (``base=True``) or the current policy (adapter on)."""
    starts = start_positions(sequences, from_position, "compute_logprobs")
    results: list[list[float]] = [[] for _ in sequences]
    todo = [i for i, s in enumerate(sequences) if starts[i] < len(s)]
    for chunk in chunks(todo, micro_batch_size):
        seqs, chunk_starts = [list(sequences[i]) for i in chunk], [starts[i] for i in chunk]
        scored = score_batch(policy, seqs, chunk_starts, None, base=base, logits_chunk_size=logits_chunk_size)
        for i, values in zip(chunk, scored, strict=True):
            results[i] = values
    policy.release_memory()
    return results


@torch.inference_mode()
def score_batch(
    policy: Policy, seqs: list[list[int]], starts: list[int], k: int | None, *, base: bool, logits_chunk_size: int
) -> list[Any]:
    """Per sequence, one row per position ``i`` in ``[start, len(s))`` of ``log p(. | s[:i])``: the
    top-k ``(ids, logprobs)`` when ``k`` is set, else the logprob of ``s[i]`` itself. The decoder runs
    once over ``s[:-1]``; only the requested positions go through the output head, in chunks."""
    with policy.model.disable_adapter() if base else contextlib.nullcontext():
        hidden = policy.hidden(policy.right_pad([s[:-1] for s in seqs]))
        pairs = list(zip(seqs, starts, strict=True))
        rows = torch.cat([torch.full((len(s) - st,), b, dtype=torch.long) for b, (s, st) in enumerate(pairs)])
        cols = torch.cat([torch.arange(st - 1, len(s) - 1) for s, st in pairs])
        targets = torch.cat([torch.as_tensor(s[st:], dtype=torch.long) for s, st in pairs]).to(policy.device)
        selected = hidden[rows.to(policy.device), cols.to(policy.device)]
        del hidden
        ids_parts, lp_parts = [], []
        for start in range(0, selected.shape[0], logits_chunk_size):
            part = slice(start, start + logits_chunk_size)
            logits = policy.head(selected[part])
            logp = logits.sub_(torch.logsumexp(logits, dim=-1, keepdim=True))  # log-softmax in place
            if k is None:
                lp_parts.append(logp.gather(1, targets[part, None]).squeeze(1).cpu())
            else:
                values, indices = logp.topk(k, dim=-1)
                ids_parts.append(indices.cpu())
                lp_parts.append(values.cpu())
    lps = torch.cat(lp_parts).tolist()
    ids = torch.cat(ids_parts).tolist() if k is not None else None
    out: list[Any] = []
    offset = 0
    for s, st in pairs:
        count = len(s) - st
        rows_lp = lps[offset : offset + count]
        out.append(rows_lp if ids is None else (ids[offset : offset + count], rows_lp))
        offset += count
    return out
