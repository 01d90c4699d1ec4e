"""Helpers the three algorithms share: prompt rendering, metrics, the base class.

Everything here talks to a model only through :class:`evsys.schema.protocols.Backend`, so it runs
unchanged on the local backend and on Tinker.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from evsys.data.templates import render_template
from evsys.schema.plugin_bases import BaseAlgorithm
from evsys.schema.protocols import Backend, ForwardBackwardResult, Message, RenderedChats
from evsys.schema.rows import ChatExample, ChatPromptExample, PromptExample


def user_messages(template: str, inputs: Mapping[str, Any]) -> list[Message]:
    """The one-turn chat ``[{"role": "user", "content": template.format(**inputs)}]``."""
    return [{"role": "user", "content": render_template(template, inputs)}]


def prompt_messages(example: PromptExample | ChatPromptExample | ChatExample, user_template: str) -> list[Message]:
    """The prompt turns of a training row: a chat row's ``messages`` (system and user turns, the last
    one the user's), or the one user turn ``user_template`` renders from a prompt row's ``inputs``."""
    if isinstance(example, PromptExample):
        return user_messages(user_template, example.inputs)
    return [{"role": m.role, "content": m.content} for m in example.messages]


def render_prompt(backend: Backend, example: Any, user_template: str) -> list[int]:
    """Token ids of :func:`prompt_messages`, rendered with the generation prompt (what the student sees)."""
    return list(backend.render_chat(prompt_messages(example, user_template), add_generation_prompt=True))


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


class AlgorithmBase(BaseAlgorithm):
    """:class:`~evsys.schema.plugin_bases.BaseAlgorithm` plus the optimizer step the built-in algorithms share."""

    @classmethod
    def chats(cls, params: Any, examples: Sequence[Any]) -> RenderedChats:
        """The student's prompt (the user turn ``user_template`` renders) of each prompt row."""
        rows = [example for example in examples if isinstance(example, PromptExample)]
        return RenderedChats(
            prompts={"student": [user_messages(params.user_template, row.inputs) for row in rows]},
            max_new_tokens=int(params.max_new_tokens),
        )

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

