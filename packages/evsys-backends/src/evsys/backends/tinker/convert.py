"""Pure conversions between the EvSys protocol's data and the ``tinker`` SDK's types."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from tinker import types
from tinker.types.topk_logprobs import MASK_LOGPROB

from evsys.backends.tinker.service_rules import LOSS_INPUTS
from evsys.schema.protocols import Datum, SampledSequence, TopKLogprobs

MASK_TOKEN_ID = 0
"""Token id of an empty top-k slot (the SDK's sentinel); its logprob is ``MASK_LOGPROB`` (probability 0)."""


def _tensor(values: Any, dtype: type, name: str) -> types.TensorData:
    try:
        array = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"Datum.{name} must be a rectangular numeric array: {exc}") from None
    return types.TensorData.from_numpy(np.ascontiguousarray(array))


#: The ``loss_fn_inputs`` each Tinker loss reads, exactly as its docs list them (one table with the
#: simulated service's rules): the RL losses take no ``weights`` (positions with advantage 0 contribute
#: nothing), as tinker-cookbook sends them.
LOSS_FN_INPUTS = LOSS_INPUTS


def to_tinker_datum(datum: Datum, loss_fn: str | None = None) -> types.Datum:
    """Convert an EvSys :class:`~evsys.schema.protocols.Datum` to a ``tinker.types.Datum`` for ``loss_fn``.

    ``model_input`` holds the N input tokens; ``loss_fn_inputs`` holds exactly the inputs the loss
    reads (:data:`LOSS_FN_INPUTS`): ``target_tokens`` (int64) and ``weights`` (float32), both ``(N,)``
    or both ``(N, K)``, for ``cross_entropy``; ``target_tokens`` ``(N,)`` with ``logprobs`` and
    ``advantages`` (float32, ``(N,)``) for ``importance_sampling`` / ``ppo`` / ``cispo``; a position the datum's ``weights`` (if any)
    mask out gets advantage 0. Without ``loss_fn``, a
    datum with advantages is taken as an RL datum, any other as a ``cross_entropy`` one.
    """
    if loss_fn is None:
        loss_fn = "importance_sampling" if datum.advantages is not None else "cross_entropy"
    if loss_fn not in LOSS_FN_INPUTS:
        raise ValueError(f"unknown loss '{loss_fn}'; Tinker's losses here are {', '.join(LOSS_FN_INPUTS)}")
    tokens = [int(t) for t in datum.input_tokens]
    n = len(tokens)
    if n == 0:
        raise ValueError("Datum.input_tokens is empty")
    targets = _tensor(datum.target_tokens, np.int64, "target_tokens")
    if targets.shape is None or len(targets.shape) not in (1, 2) or targets.shape[0] != n:
        raise ValueError(f"Datum.target_tokens must have shape (N,) or (N, K) with N={n}, got {targets.shape}")
    inputs: dict[str, types.TensorData] = {"target_tokens": targets}
    if loss_fn == "cross_entropy":
        if datum.weights is None:
            raise ValueError("Datum.weights is missing: loss 'cross_entropy' needs weights")
        weights = _tensor(datum.weights, np.float32, "weights")
        if weights.shape != targets.shape:
            raise ValueError(f"Datum.weights has shape {weights.shape}, target_tokens {targets.shape}: they must match")
        inputs["weights"] = weights
    else:
        if len(targets.shape) != 1:
            raise ValueError(f"loss '{loss_fn}' needs target_tokens of shape (N,), got {targets.shape}")
        for name in ("logprobs", "advantages"):
            values = getattr(datum, name)
            if values is None:
                raise ValueError(f"Datum.{name} is missing: loss '{loss_fn}' needs logprobs and advantages")
            tensor = _tensor(values, np.float32, name)
            if tensor.shape != [n]:
                raise ValueError(f"Datum.{name} must have shape ({n},), got {tensor.shape}")
            inputs[name] = tensor
        if datum.weights is not None:
            mask = np.asarray(_tensor(datum.weights, np.float32, "weights").to_numpy()).reshape(n) != 0
            advantages = np.where(mask, np.asarray(inputs["advantages"].to_numpy()), np.float32(0.0))
            inputs["advantages"] = types.TensorData.from_numpy(np.ascontiguousarray(advantages, dtype=np.float32))
    return types.Datum(model_input=types.ModelInput.from_ints(tokens), loss_fn_inputs=inputs)


def sampling_params(
    max_tokens: int, temperature: float, stop: Sequence[str] | Sequence[int] | None, seed: int | None
) -> types.SamplingParams:
    """``SamplingParams`` for the protocol's ``sample``: ``stop`` is stop strings or stop token ids."""
    return types.SamplingParams(
        max_tokens=max_tokens, temperature=temperature, stop=list(stop) if stop else None, seed=seed
    )


def to_sampled_sequence(sequence: Any, tokenizer: Any, stop: Sequence[str] | None = None) -> SampledSequence:
    """Convert a ``tinker.types.SampledSequence``: tokens as sampled, text without EOS and cut at a stop string."""
    tokens = [int(t) for t in sequence.tokens]
    logprobs = sequence.logprobs
    values = [float(x) for x in logprobs] if logprobs is not None else [math.nan] * len(tokens)
    body = tokens
    eos = getattr(tokenizer, "eos_token_id", None)
    if body and eos is not None and body[-1] == eos:
        body = body[:-1]
    text = tokenizer.decode(body, skip_special_tokens=True)
    for s in stop or ():
        index = text.find(s)
        if s and index >= 0:
            text = text[:index]
    reason = "length" if sequence.stop_reason == "length" else "stop"
    return SampledSequence(tokens=tokens, logprobs=values, text=text, stop_reason=reason)


def _dense_topk(response: Any) -> tuple[np.ndarray, np.ndarray] | None:
    dense = getattr(response, "topk_prompt_logprobs_np", None)
    if dense is not None:
        return np.asarray(dense.token_ids), np.asarray(dense.logprobs)
    rows = response.topk_prompt_logprobs
    if rows is None:
        return None
    width = max((len(r) for r in rows if r), default=0)
    ids = np.full((len(rows), width), MASK_TOKEN_ID, dtype=np.int64)
    lps = np.full((len(rows), width), MASK_LOGPROB, dtype=np.float64)
    for i, row in enumerate(rows):
        for j, (tok, lp) in enumerate(row or ()):
            ids[i, j], lps[i, j] = tok, lp
    return ids, lps


def topk_from_response(response: Any, length: int, from_position: int, k: int) -> TopKLogprobs:
    """The top-k rows of a ``SampleResponse`` for positions ``[from_position, length)``.

    Tinker's prompt-logprob alignment: row ``i`` of ``topk_prompt_logprobs`` is the top-k of
    ``p(. | prompt[:i])`` (row 0 is empty). Rows narrower than ``k`` are padded with the SDK's sentinel
    (token 0, logprob -99999: probability 0). A requested position the service left empty is an error.
    """
    dense = _dense_topk(response)
    if dense is None:
        raise RuntimeError("the Tinker service returned no top-k prompt logprobs (topk_prompt_logprobs)")
    ids, lps = dense
    rows = ids.shape[0]
    if rows == length:
        offset = 0
    elif rows == length - 1:  # rows start at position 1
        offset = 1
    else:
        raise RuntimeError(f"the Tinker service returned {rows} top-k rows for a sequence of {length} tokens")
    ids = ids[from_position - offset : length - offset, :k]
    lps = lps[from_position - offset : length - offset, :k]
    if ids.shape[1] < k:
        pad = k - ids.shape[1]
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=MASK_TOKEN_ID)
        lps = np.pad(lps, ((0, 0), (0, pad)), constant_values=MASK_LOGPROB)
    empty = np.flatnonzero((ids[:, 0] == MASK_TOKEN_ID) & (lps[:, 0] == MASK_LOGPROB)) if k else []
    if len(empty):
        raise RuntimeError(f"the Tinker service returned no top-k logprobs at position {from_position + int(empty[0])}")
    return TopKLogprobs(
        token_ids=[[int(t) for t in row] for row in ids.tolist()],
        logprobs=[[float(x) for x in row] for row in lps.tolist()],
    )


def logprobs_from_prompt(values: Sequence[float | None] | None, length: int, from_position: int) -> list[float]:
    """The logprobs of positions ``[from_position, length)`` from ``SamplingClient.compute_logprobs``.

    The SDK returns one entry per prompt token, entry ``i`` being ``log p(s[i] | s[:i])`` (entry 0, and
    with ``prompt_logprobs_last_n`` every entry before the scored suffix, is ``None``). A requested
    position the service left empty is an error.
    """
    if values is None or len(values) != length:
        got = "none" if values is None else len(values)
        raise RuntimeError(f"the Tinker service returned {got} prompt logprobs for a sequence of {length} tokens")
    out = []
    for i in range(from_position, length):
        value = values[i]
        if value is None or not math.isfinite(float(value)):
            raise RuntimeError(f"the Tinker service returned no prompt logprob at position {i}")
        out.append(float(value))
    return out


def loss_sum_from_output(output: Any, loss_fn: str, data: Sequence[types.Datum]) -> float:
    """The loss of a ``ForwardBackwardOutput``: ``metrics["loss:sum"]``.

    Without it (older services), ``cross_entropy``'s sum is recomputed from the per-datum ``logprobs``
    outputs as ``-sum(weights * logprobs)``; other losses need the metric.
    """
    metrics = output.metrics or {}
    if "loss:sum" in metrics:
        return float(metrics["loss:sum"])
    if loss_fn == "cross_entropy" and len(output.loss_fn_outputs) == len(data):
        total = 0.0
        for datum, out in zip(data, output.loss_fn_outputs, strict=True):
            logprobs = np.asarray(out["logprobs"].to_numpy(), dtype=np.float64)
            weights = np.asarray(datum.loss_fn_inputs["weights"].to_numpy(), dtype=np.float64)
            total += float(-(weights * logprobs.reshape(weights.shape)).sum())
        return total
    raise RuntimeError(f"the Tinker service returned no 'loss:sum' metric for loss '{loss_fn}'")
