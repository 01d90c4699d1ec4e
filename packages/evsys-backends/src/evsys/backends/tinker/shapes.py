"""Shape summaries of SDK requests (``tinker.types``), the form :mod:`.service_rules` checks and recordings store."""

from __future__ import annotations

from typing import Any

import numpy as np
from tinker import types

from evsys.backends.tinker.service_rules import DatumShape, SampleShape, TensorShape


def tensor_shape(tensor: types.TensorData) -> TensorShape:
    """dtype, shape and the min / max / finiteness of one ``TensorData``."""
    array = np.asarray(tensor.to_numpy())
    dtype = str(getattr(tensor, "dtype", None) or array.dtype)
    if array.size == 0:
        return TensorShape(dtype, tuple(array.shape))
    finite = bool(np.isfinite(array).all()) if array.dtype.kind == "f" else True
    return TensorShape(dtype, tuple(int(x) for x in array.shape), float(np.nanmin(array)), float(np.nanmax(array)), finite)


def datum_shape(datum: types.Datum) -> DatumShape:
    """The summary of one ``Datum``: model-input length and id range, and each loss input's tensor summary."""
    tokens = [int(t) for t in datum.model_input.to_ints()]
    inputs = {str(name): tensor_shape(value) for name, value in datum.loss_fn_inputs.items()}
    return DatumShape(len(tokens), min(tokens, default=0), max(tokens, default=0), inputs)


def sample_shape(
    prompt: types.ModelInput,
    num_samples: int,
    params: types.SamplingParams,
    include_prompt_logprobs: bool = False,
    topk_prompt_logprobs: int = 0,
    prompt_logprobs_last_n: int | None = None,
) -> SampleShape:
    """The summary of one ``sample`` request."""
    tokens = [int(t) for t in prompt.to_ints()]
    return SampleShape(
        prompt_length=len(tokens),
        min_id=min(tokens, default=0),
        max_id=max(tokens, default=0),
        num_samples=int(num_samples),
        max_tokens=params.max_tokens,
        temperature=float(params.temperature),
        top_p=float(params.top_p),
        top_k=int(params.top_k),
        include_prompt_logprobs=bool(include_prompt_logprobs),
        topk_prompt_logprobs=int(topk_prompt_logprobs),
        prompt_logprobs_last_n=prompt_logprobs_last_n,
    )


def adam_args(params: types.AdamParams) -> tuple[float, float, float, float, float, float]:
    """``(learning_rate, beta1, beta2, eps, weight_decay, grad_clip_norm)`` of an ``AdamParams``."""
    get: Any = getattr
    return (
        float(params.learning_rate),
        float(params.beta1),
        float(params.beta2),
        float(params.eps),
        float(get(params, "weight_decay", 0.0) or 0.0),
        float(get(params, "grad_clip_norm", 0.0) or 0.0),
    )
