"""Helpers the three algorithms share: prompt rendering, datum shifting, the base class.

Everything here talks to a model only through :class:`evsys.schema.protocols.Backend`, so it runs
unchanged on the local backend and on Tinker.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from evsys.data.templates import render_template
from evsys.schema.params import TrainingParams
from evsys.schema.protocols import Backend, ForwardBackwardResult, Message, RunContext


def user_messages(template: str, inputs: Mapping[str, Any]) -> list[Message]:
    """The one-turn chat ``[{"role": "user", "content": template.format(**inputs)}]``."""
    return [{"role": "user", "content": render_template(template, inputs)}]


def render_user_prompt(backend: Backend, template: str, inputs: Mapping[str, Any]) -> list[int]:
    """Token ids of the user turn rendered from ``template`` and ``inputs``, ready for generation.

    This is the prompt every algorithm's student sees: ``backend.render_chat`` of
    :func:`user_messages` with ``add_generation_prompt=True``.
    """
    return list(backend.render_chat(user_messages(template, inputs), add_generation_prompt=True))


def first_expected(expected: str | Sequence[str]) -> str:
    """The gold answer as one string: a list of accepted answers gives its first."""
    if isinstance(expected, str):
        return expected
    if not expected:
        raise ValueError("expected is an empty list; give at least one gold answer")
    return str(expected[0])


def tokenizer_size(tokenizer: Any) -> int | None:
    """``len(tokenizer)`` (the vocabulary with added tokens, as tinker-cookbook counts it), or None for a
    tokenizer that does not say."""
    try:
        return len(tokenizer)
    except TypeError:
        return None


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def sampling_seed(seed: int, step: int, salt: int = 0) -> int:
    """A deterministic per-step sampling seed, so a resumed run samples what the original would have."""
    return (seed * 1_000_003 + step * 7_919 + salt) % (2**31 - 1)


def safe_div(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, or 0.0 when the denominator is 0 (metrics must stay finite)."""
    return float(numerator) / denominator if denominator else 0.0


def logsumexp(values: Sequence[float]) -> float:
    """``log(sum(exp(v)))`` computed stably; ``-inf`` for an empty or all ``-inf`` input."""
    finite = [v for v in values if v != -math.inf]
    if not finite:
        return -math.inf
    top = max(finite)
    return top + math.log(sum(math.exp(v - top) for v in finite))


def backend_metrics(result: ForwardBackwardResult, optim: Mapping[str, float] | None) -> dict[str, float]:
    """Backend metrics as train metrics: ``forward_backward``'s as ``train/fb/<name>`` (e.g.
    ``train/fb/loss:sum``), ``optim_step``'s as ``train/<name>`` (e.g. ``train/grad_norm``). Non-finite
    values are dropped; an algorithm's own keys are merged after these and win."""
    out: dict[str, float] = {}
    for prefix, metrics in (("train/fb/", result.metrics), ("train/", optim or {})):
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and math.isfinite(float(value)):
                out[prefix + key.removeprefix("train/")] = float(value)
    return out


class AlgorithmBase:
    """Shared construction, step counting, state and the optimizer step of the built-in algorithms."""

    params: TrainingParams

    def __init__(self, params: TrainingParams, backend: Backend, context: RunContext | None = None) -> None:
        self.params = params
        self.backend = backend
        self.context = context

    def total_steps(self, num_examples: int) -> int:
        """How many optimizer steps the run takes; ``max_steps`` unless an algorithm counts epochs."""
        return int(self.params.max_steps)

    def state_dict(self) -> dict[str, Any]:
        """Algorithm state that must survive a resume (none: sampling seeds derive from the step)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def optimizer_step(self) -> dict[str, float]:
        """One AdamW step with the params' learning rate, weight decay and gradient clipping."""
        return dict(
            self.backend.optim_step(
                self.params.learning_rate,
                weight_decay=self.params.weight_decay,
                grad_clip=self.params.grad_clip,
            )
            or {}
        )
