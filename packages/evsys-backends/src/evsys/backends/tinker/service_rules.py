"""The Tinker service's documented request rules, checked offline on request *shapes*.

Each check takes a shape summary (what a request holds: keys, dtypes, shapes, token-id ranges,
lengths, options), so the same rules check the simulator's live requests (:mod:`.simulator`) and a
recording of a real session (:mod:`.recording`). A violation raises :class:`ServiceRuleError`, one
line a user reads. Sources: Tinker's docs (losses: ``cross_entropy`` takes ``target_tokens`` and
``weights``, ``(N,)`` or ``(N, K)``; ``importance_sampling``, ``ppo`` and ``cispo`` take
``target_tokens``, ``logprobs`` and ``advantages``, ``(N,)``), the SDK 0.38's ``SamplingClient.sample``
(``prompt_logprobs_last_n`` between 1 and ``len(prompt) - 1``, with ``include_prompt_logprobs``)
and ``SamplingParams``, and the model catalog (:mod:`.models`). Imports no SDK.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from evsys.backends.tinker.models import ModelLimits, retirement_message
from evsys.schema.errors import EvsysError

LOSS_INPUTS: dict[str, tuple[str, ...]] = {
    "cross_entropy": ("target_tokens", "weights"),
    "importance_sampling": ("target_tokens", "logprobs", "advantages"),
    "ppo": ("target_tokens", "logprobs", "advantages"),
    "cispo": ("target_tokens", "logprobs", "advantages"),
}
"""The exact ``loss_fn_inputs`` keys of each built-in loss."""

LOSS_CONFIG_KEYS: dict[str, frozenset[str]] = {
    "cross_entropy": frozenset(),
    "importance_sampling": frozenset(),
    "ppo": frozenset({"clip_low_threshold", "clip_high_threshold"}),
    "cispo": frozenset({"clip_low_threshold", "clip_high_threshold"}),
}
"""The ``loss_fn_config`` keys each loss reads."""

INT_DTYPES = frozenset({"int64", "int32"})
FLOAT_DTYPES = frozenset({"float32", "float64"})


class ServiceRuleError(EvsysError):
    """A request the Tinker service would refuse; the message is one line naming the request and the rule."""


@dataclass(frozen=True)
class TensorShape:
    """One tensor of a request: dtype name, shape, and (numeric) min / max / all finite."""

    dtype: str
    shape: tuple[int, ...]
    min: float | None = None
    max: float | None = None
    finite: bool = True

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what a recording stores)."""
        return {"dtype": self.dtype, "shape": list(self.shape), "min": self.min, "max": self.max, "finite": self.finite}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TensorShape:
        """Inverse of :meth:`to_json`."""
        return cls(str(data["dtype"]), tuple(int(x) for x in data["shape"]), data.get("min"), data.get("max"), bool(data.get("finite", True)))


@dataclass(frozen=True)
class DatumShape:
    """One ``Datum``: its model-input length and id range, and its ``loss_fn_inputs`` tensors."""

    length: int
    min_id: int
    max_id: int
    inputs: dict[str, TensorShape] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"length": self.length, "min_id": self.min_id, "max_id": self.max_id,
                "inputs": {k: v.to_json() for k, v in self.inputs.items()}}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DatumShape:
        """Inverse of :meth:`to_json`."""
        inputs = {str(k): TensorShape.from_json(v) for k, v in dict(data["inputs"]).items()}
        return cls(int(data["length"]), int(data["min_id"]), int(data["max_id"]), inputs)


def _reject(what: str, reason: str) -> ServiceRuleError:
    return ServiceRuleError(f"Tinker would reject {what}: {reason}")


def check_model(model: str, limits: ModelLimits | None) -> ModelLimits:
    """The model must be one the service serves (the catalog knows its limits); a retired one names its replacement."""
    if limits is None:
        retired = retirement_message(model)
        if retired is not None:
            raise _reject(f"the model '{model}'", retired)
        raise _reject(
            f"the model '{model}'",
            "it is not in the catalog of models Tinker serves (evsys.backends.tinker.catalog), "
            "or the simulator does not know its vocabulary size",
        )
    return limits


def check_lora_rank(rank: int, model: str, limits: ModelLimits) -> None:
    """``create_lora_training_client(rank=...)``: a rank from 1 to the model's maximum."""
    if not 1 <= rank <= limits.max_lora_rank:
        raise _reject(
            f"create_lora_training_client(rank={rank})",
            f"'{model}' takes LoRA ranks 1..{limits.max_lora_rank} (algorithm.params.lora_rank)",
        )


def _check_ids(what: str, name: str, low: float | None, high: float | None, limits: ModelLimits) -> None:
    if low is not None and low < 0:
        raise _reject(what, f"{name} holds the negative token id {int(low)}")
    if high is not None and high >= limits.vocab_size:
        raise _reject(what, f"{name} holds token id {int(high)}, not below the vocabulary size {limits.vocab_size}")


def check_datum(index: int, datum: DatumShape, loss_fn: str, limits: ModelLimits) -> None:
    """One datum of ``forward_backward(data, loss_fn)``: exact keys, shapes, dtypes, ids and length."""
    what = f"forward_backward({loss_fn}) datum {index}"
    expected = LOSS_INPUTS[loss_fn]
    keys = set(datum.inputs)
    missing = [k for k in expected if k not in keys]
    extra = sorted(keys - set(expected))
    if missing or extra:
        parts = ([f"lacks {', '.join(missing)}"] if missing else []) + ([f"has {', '.join(extra)}, which it does not take"] if extra else [])
        raise _reject(what, f"loss_fn_inputs {' and '.join(parts)}; {loss_fn} takes exactly {', '.join(expected)}")
    n = datum.length
    if n < 1:
        raise _reject(what, "model_input is empty")
    if limits.context_length is not None and n > limits.context_length:
        raise _reject(what, f"model_input has {n} tokens, more than the context window of {limits.context_length}")
    _check_ids(what, "model_input", datum.min_id, datum.max_id, limits)
    targets = datum.inputs["target_tokens"]
    if targets.dtype not in INT_DTYPES:
        raise _reject(what, f"target_tokens has dtype {targets.dtype}; it must be int64 or int32")
    two_d = len(targets.shape) == 2
    if two_d and loss_fn != "cross_entropy":
        raise _reject(what, f"target_tokens has shape {targets.shape}; {loss_fn} takes (N,) = ({n},) (only cross_entropy takes (N, K))")
    if targets.shape[:1] != (n,) or len(targets.shape) not in (1, 2):
        raise _reject(what, f"target_tokens has shape {targets.shape}; it must be (N,) or (N, K) with N = {n}, the model_input length")
    _check_ids(what, "target_tokens", targets.min, targets.max, limits)
    for name in expected[1:]:
        tensor = datum.inputs[name]
        if tensor.dtype not in FLOAT_DTYPES:
            raise _reject(what, f"{name} has dtype {tensor.dtype}; it must be float32")
        want = targets.shape if name == "weights" else (n,)
        if tensor.shape != want:
            raise _reject(what, f"{name} has shape {tensor.shape}; it must be {want}, as target_tokens")
        if not tensor.finite:
            raise _reject(what, f"{name} holds NaN or infinite values")


def check_forward_backward(
    data: Sequence[DatumShape], loss_fn: str, loss_fn_config: Mapping[str, Any] | None, limits: ModelLimits
) -> None:
    """``forward_backward(data, loss_fn, loss_fn_config)``: a known loss, its config keys, every datum."""
    if loss_fn not in LOSS_INPUTS:
        raise _reject(f"forward_backward(loss_fn='{loss_fn}')", f"the built-in losses are {', '.join(LOSS_INPUTS)}")
    if not data:
        raise _reject(f"forward_backward({loss_fn})", "it holds no datums")
    unknown = sorted(set(loss_fn_config or {}) - LOSS_CONFIG_KEYS[loss_fn])
    if unknown:
        takes = ", ".join(sorted(LOSS_CONFIG_KEYS[loss_fn])) or "none"
        raise _reject(f"forward_backward({loss_fn})", f"loss_fn_config has {', '.join(unknown)}; {loss_fn} takes: {takes}")
    for index, datum in enumerate(data):
        check_datum(index, datum, loss_fn, limits)


@dataclass(frozen=True)
class SampleShape:
    """One ``SamplingClient.sample`` request: prompt length and ids, counts, sampling params, prompt-logprob options."""

    prompt_length: int
    min_id: int
    max_id: int
    num_samples: int
    max_tokens: int | None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    include_prompt_logprobs: bool = False
    topk_prompt_logprobs: int = 0
    prompt_logprobs_last_n: int | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SampleShape:
        """Inverse of :meth:`to_json`."""
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def check_sample(request: SampleShape, limits: ModelLimits) -> None:
    """A sample (or prompt-logprob) request: prompt ids and length, sampling params, logprob options."""
    what = "sample"
    n = request.prompt_length
    if n < 1:
        raise _reject(what, "the prompt is empty")
    _check_ids(what, "the prompt", request.min_id, request.max_id, limits)
    if request.num_samples < 1:
        raise _reject(what, f"num_samples is {request.num_samples}; it must be at least 1")
    if request.max_tokens is None or request.max_tokens < 1:
        raise _reject(what, f"sampling_params.max_tokens is {request.max_tokens}; it must be at least 1")
    if limits.context_length is not None and n + request.max_tokens > limits.context_length:
        raise _reject(
            what,
            f"the prompt ({n} tokens) plus max_tokens ({request.max_tokens}) exceeds the context window of {limits.context_length}",
        )
    if not (math.isfinite(request.temperature) and request.temperature >= 0):
        raise _reject(what, f"sampling_params.temperature is {request.temperature}; it must be at least 0")
    if not 0 < request.top_p <= 1:
        raise _reject(what, f"sampling_params.top_p is {request.top_p}; it must be in (0, 1]")
    if request.top_k != -1 and request.top_k < 1:
        raise _reject(what, f"sampling_params.top_k is {request.top_k}; it must be -1 (no limit) or at least 1")
    if request.topk_prompt_logprobs < 0 or request.topk_prompt_logprobs > limits.vocab_size:
        raise _reject(what, f"topk_prompt_logprobs is {request.topk_prompt_logprobs}; it must be in 0..{limits.vocab_size}")
    last_n = request.prompt_logprobs_last_n
    if last_n is not None:
        if not request.include_prompt_logprobs:
            raise _reject(what, "prompt_logprobs_last_n needs include_prompt_logprobs=True")
        if not 1 <= last_n <= n - 1:
            raise _reject(what, f"prompt_logprobs_last_n is {last_n}; it must be between 1 and len(prompt) - 1 = {n - 1}")


def check_adam(learning_rate: float, beta1: float, beta2: float, eps: float, weight_decay: float, grad_clip_norm: float) -> None:
    """``optim_step(AdamParams(...))``: a positive learning rate, betas in [0, 1), positive eps, no negative decay or clip."""
    what = "optim_step"
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise _reject(what, f"learning_rate is {learning_rate}; it must be a positive number")
    for name, value in (("beta1", beta1), ("beta2", beta2)):
        if not 0 <= value < 1:
            raise _reject(what, f"{name} is {value}; it must be in [0, 1)")
    if not eps > 0:
        raise _reject(what, f"eps is {eps}; it must be positive")
    if weight_decay < 0 or grad_clip_norm < 0:
        raise _reject(what, "weight_decay and grad_clip_norm must not be negative")
