"""The local backend's training losses (Tinker's definitions) and the math of ``forward_backward``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from evsys.backends.local.loading import Policy, chunks
from evsys.schema.errors import EvsysError
from evsys.schema.protocols import Datum, ForwardBackwardResult

#: the ``loss_fn`` names ``forward_backward`` accepts
LOSSES = ("cross_entropy", "importance_sampling", "ppo")
PPO_DEFAULTS = {"clip_low_threshold": 0.8, "clip_high_threshold": 1.2}


class TargetLogprobs(torch.autograd.Function):
    """``log_softmax(logits).gather(1, targets)`` holding one ``[P, V]`` buffer less than the two ops.

    ``log_softmax`` keeps its ``[P, V]`` output for the backward and ``gather``'s backward builds a
    ``[P, V]`` gradient before ``log_softmax``'s builds another; this keeps the logits and their
    log-sum-exp and builds the gradient ``scatter(g) - softmax * sum(g)`` in the logits' own buffer.
    It consumes ``logits``: the backward overwrites them, so pass a tensor nothing else reads (the
    output head's fresh result).
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        lse = torch.logsumexp(logits, dim=-1, keepdim=True)
        ctx.save_for_backward(logits, lse, targets)
        return logits.gather(1, targets) - lse

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, lse, targets = ctx.saved_tensors
        # the gradient is built in the saved logits' own buffer (the graph is never run backward twice)
        grad_logits = logits.sub_(lse).exp_().mul_(-grad.sum(dim=1, keepdim=True))
        return grad_logits.scatter_add_(1, targets, grad), None


def forward_backward(
    policy: Policy,
    batch: Sequence[Datum],
    loss_fn: str,
    loss_fn_config: Mapping[str, float] | None,
    *,
    micro_batch_size: int | None,
    logits_chunk_size: int,
    lora_dropout: float,
    before_chunks: Callable[[list[Sequence[dict[str, torch.Tensor]]]], None] | None = None,
) -> ForwardBackwardResult:
    """Accumulate the gradients of ``loss_fn`` summed over ``batch`` into the policy's LoRA parameters.

    ``cross_entropy``: ``-sum(w * log p(target))`` over ``(N,)`` or ``(N, K)`` targets and weights.
    ``importance_sampling``: ``-sum(exp(logp - sampler_logp) * advantage)``.
    ``ppo``: ``-sum(min(r * A, clip(r, clip_low_threshold, clip_high_threshold) * A))`` with
    ``r = exp(logp - sampler_logp)`` (defaults 0.8 and 1.2). The RL losses take no weights: positions
    with a zero advantage contribute nothing. Metrics: ``loss:sum``, ``tokens``, ``sequences`` (and
    ``ratio:mean``, plus ``clip:fraction`` for ppo). ``before_chunks`` sees the micro-batches (prepared
    tensors) before the first forward pass (``gradient_checkpointing: auto`` sizes itself by them).
    """
    if loss_fn not in LOSSES:
        raise EvsysError(f"unknown loss_fn '{loss_fn}'; the local backend supports: {', '.join(LOSSES)}")
    config = dict(PPO_DEFAULTS)
    config.update(loss_fn_config or {})
    prepared = [p for p in (prepare_datum(d, i, loss_fn) for i, d in enumerate(batch)) if p is not None]
    totals = {"loss": 0.0, "tokens": 0.0, "ratio": 0.0, "clipped": 0.0}
    if prepared:
        policy.release_memory()  # what came before (e.g. a teacher pass) is not resident under the student's peak
        if before_chunks is not None:
            before_chunks(list(chunks(prepared, micro_batch_size)))
        with policy.training_mode(lora_dropout):
            for chunk in chunks(prepared, micro_batch_size):
                _forward_backward_chunk(policy, chunk, loss_fn, config, totals, logits_chunk_size)
    metrics = {"loss:sum": totals["loss"], "tokens": totals["tokens"], "sequences": float(len(batch))}
    if loss_fn != "cross_entropy" and totals["tokens"]:
        metrics["ratio:mean"] = totals["ratio"] / totals["tokens"]
        if loss_fn == "ppo":
            metrics["clip:fraction"] = totals["clipped"] / totals["tokens"]
    return ForwardBackwardResult(loss_sum=totals["loss"], metrics=metrics)


def prepare_datum(datum: Datum, index: int, loss_fn: str) -> dict[str, torch.Tensor] | None:
    """Tensors of one datum, trimmed to the positions that carry loss; None when none do."""
    n = len(datum.input_tokens)
    where = f"batch[{index}]"
    if n == 0:
        raise EvsysError(f"{where}: input_tokens is empty")
    targets = torch.as_tensor(datum.target_tokens, dtype=torch.long)
    if targets.shape[0] != n or targets.dim() > 2:
        raise EvsysError(f"{where}: target_tokens must have shape (N,) or (N, K) with N={n}, got {tuple(targets.shape)}")
    if targets.dim() == 1:
        targets = targets[:, None]
    if loss_fn == "cross_entropy":
        if datum.weights is None:
            raise EvsysError(f"{where}: loss 'cross_entropy' needs weights")
        weights = torch.as_tensor(datum.weights, dtype=torch.float32)
        if weights.dim() == 1:
            weights = weights[:, None]
        if weights.shape != targets.shape:
            raise EvsysError(
                f"{where}: weights shape {tuple(weights.shape)} differs from target_tokens {tuple(targets.shape)}"
            )
        keep = (weights != 0).any(dim=1)
        extra = {"weights": weights}
    else:
        if datum.logprobs is None or datum.advantages is None:
            raise EvsysError(f"{where}: loss '{loss_fn}' needs the sampler's logprobs and advantages")
        if targets.shape[1] != 1:
            raise EvsysError(f"{where}: loss '{loss_fn}' needs (N,) target_tokens, got {tuple(targets.shape)}")
        sampler = torch.as_tensor(datum.logprobs, dtype=torch.float32)
        advantages = torch.as_tensor(datum.advantages, dtype=torch.float32)
        if sampler.shape != (n,) or advantages.shape != (n,):
            raise EvsysError(f"{where}: logprobs and advantages must have shape ({n},)")
        keep = advantages != 0
        extra = {"sampler": sampler, "advantages": advantages}
    positions = keep.nonzero().squeeze(1)
    if positions.numel() == 0:
        return None
    last = int(positions[-1]) + 1  # causal: later inputs cannot change these positions
    prepared = {"input": torch.as_tensor(list(datum.input_tokens[:last]), dtype=torch.long), "positions": positions}
    prepared["targets"] = targets[positions]
    prepared.update({key: value[positions] for key, value in extra.items()})
    return prepared


def _forward_backward_chunk(
    policy: Policy,
    chunk: Sequence[dict[str, torch.Tensor]],
    loss_fn: str,
    config: Mapping[str, float],
    totals: dict[str, float],
    size: int,
) -> None:
    hidden = policy.hidden(policy.right_pad([p["input"].tolist() for p in chunk]))
    policy.release_memory()  # the forward's temporaries, before the backward allocates its own
    rows = torch.cat([torch.full((len(p["positions"]),), b, dtype=torch.long) for b, p in enumerate(chunk)])
    cols = torch.cat([p["positions"] for p in chunk])
    selected = hidden[rows.to(policy.device), cols.to(policy.device)]
    # Cut the graph at the selected hidden states: the output head and log-softmax run in chunks,
    # each freed after its backward, then one backward through the decoder.
    detached = selected.detach().requires_grad_(True)
    merged = {
        key: torch.cat([p[key] for p in chunk]).to(policy.device) for key in chunk[0] if key not in ("input", "positions")
    }
    for start in range(0, detached.shape[0], size):
        part = slice(start, start + size)
        target_logp = TargetLogprobs.apply(policy.head(detached[part]), merged["targets"][part])
        if loss_fn == "cross_entropy":
            loss = -(merged["weights"][part] * target_logp).sum()
        else:
            ratio = torch.exp(target_logp.squeeze(1) - merged["sampler"][part])
            advantages = merged["advantages"][part]
            if loss_fn == "importance_sampling":
                loss = -(ratio * advantages).sum()
            else:
                low, high = float(config["clip_low_threshold"]), float(config["clip_high_threshold"])
                clipped = torch.clamp(ratio, low, high)
                loss = -torch.minimum(ratio * advantages, clipped * advantages).sum()
                totals["clipped"] += float(((ratio < low) | (ratio > high)).sum())
            totals["ratio"] += float(ratio.detach().sum())
        loss.backward()
        totals["loss"] += float(loss.detach())
        totals["tokens"] += float(target_logp.shape[0])
    if detached.grad is not None and selected.requires_grad:
        selected.backward(detached.grad)
