"""SFT: cross-entropy on the gold answer tokens, prompt masked, through the chat template.

Rows are PromptExamples (``user_template`` over ``inputs`` is the user turn, ``expected`` — or its
first item — the assistant turn) or ChatExamples (every assistant turn is trained on; system, user
and tool turns are masked). ``loss = -sum over answer tokens of w * log p(token)`` (Tinker's
``cross_entropy`` with ``(N,)`` targets) where, as in tinker-cookbook's SFT (``reduction="mean"``),
each example's answer weights sum to 1 (``reduction: none``: weight 1 per answer token).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from evsys.algorithms.common import (
    AlgorithmBase,
    backend_metrics,
    common_prefix_length,
    first_expected,
    prompt_messages,
    safe_div,
)
from evsys.algorithms.sft.params import SFTParams
from evsys.schema.protocols import Backend, Datum, Message, RenderedChats, RunContext
from evsys.schema.rows import ChatExample, ChatPromptExample, PromptExample


def sft_total_steps(params: SFTParams, num_examples: int) -> int:
    """Steps of an SFT run: ``max_steps``, ``ceil(epochs * num_examples / batch_size)``, or the smaller."""
    counts = []
    if params.max_steps is not None:
        counts.append(int(params.max_steps))
    if params.epochs is not None:
        counts.append(max(1, math.ceil(params.epochs * num_examples / params.batch_size)))
    return min(counts)


def build_sft_datum(
    tokens: Sequence[int], train_mask: Sequence[bool], max_length: int | None = None, reduction: str = "none"
) -> Datum:
    """The datum of one rendered sequence (pure).

    ``tokens`` (truncated to ``max_length``) is shifted by one: ``input_tokens = tokens[:-1]``,
    ``target_tokens = tokens[1:]``; ``weights[n]`` is 1.0 when ``tokens[n + 1]`` is a trained (answer)
    token per ``train_mask`` and 0.0 otherwise; with ``reduction="mean"`` they are then divided by
    their sum (after truncation), so the example's weights sum to 1 (tinker-cookbook's
    ``datum_from_model_input_weights``).
    """
    if len(tokens) != len(train_mask):
        raise ValueError(f"{len(tokens)} tokens but {len(train_mask)} mask entries")
    if reduction not in ("mean", "none"):
        raise ValueError(f"unknown reduction {reduction!r}; use 'mean' or 'none'")
    if max_length is not None:
        tokens, train_mask = tokens[:max_length], train_mask[:max_length]
    tokens = [int(t) for t in tokens]
    weights = [1.0 if m else 0.0 for m in train_mask[1:]]
    total = sum(weights)
    if reduction == "mean" and total > 0:
        weights = [w / total for w in weights]
    return Datum(input_tokens=tokens[:-1], target_tokens=tokens[1:], weights=weights)


def _render_or_empty(backend: Backend, messages: Sequence[Message]) -> list[int]:
    """``messages`` rendered with the generation prompt; for no messages, whatever the template renders
    for an empty chat (e.g. a default system prompt), or nothing when it cannot."""
    try:
        return list(backend.render_chat(messages, add_generation_prompt=True))
    except Exception:  # some templates reject an empty chat; then the span starts at 0
        if messages:
            raise
        return []


def assistant_mask(backend: Backend, messages: Sequence[Message]) -> tuple[list[int], list[bool]]:
    """Render ``messages`` and mark the tokens of every assistant turn.

    Found by rendering prefixes, so it works with any chat template: turn ``i``'s span starts where
    ``render(messages[:i], add_generation_prompt=True)`` stops agreeing with the full rendering and ends
    where ``render(messages[:i + 1])`` does (so the turn's end-of-turn token is trained on too).
    """
    full = list(backend.render_chat(messages, add_generation_prompt=False))
    mask = [False] * len(full)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render_or_empty(backend, messages[:i])
        through = backend.render_chat(messages[: i + 1], add_generation_prompt=False)
        start = common_prefix_length(before, full)
        end = common_prefix_length(through, full)
        for n in range(start, end):
            mask[n] = True
    return full, mask


def example_messages(example: PromptExample | ChatPromptExample | ChatExample, user_template: str) -> list[Message]:
    """The conversation of a row: the chat as given, or the prompt turns plus the gold answer."""
    if isinstance(example, ChatExample):
        return [{"role": m.role, "content": m.content} for m in example.messages]
    answer = first_expected(example.expected)
    return [*prompt_messages(example, user_template), {"role": "assistant", "content": answer}]


class SFT(AlgorithmBase):
    """Supervised fine-tuning (``algorithm.kind: sft``); built as ``SFT(params, backend, context)``."""

    params: SFTParams

    def __init__(self, params: SFTParams, backend: Backend, context: RunContext | None = None) -> None:
        super().__init__(params, backend, context)

    @classmethod
    def chats(cls, params: SFTParams, examples: Sequence[Any]) -> RenderedChats:  # type: ignore[override]
        """Each row's whole conversation (:func:`example_messages`); SFT samples nothing."""
        return RenderedChats(trained=[example_messages(example, params.user_template) for example in examples])

    @classmethod
    def total_steps(cls, params: SFTParams, num_examples: int) -> int:  # type: ignore[override]
        """``max_steps``, or the steps ``epochs`` passes over ``num_examples`` take (the smaller if both)."""
        return sft_total_steps(params, num_examples)

    def build_datums(self, example: PromptExample | ChatPromptExample | ChatExample) -> list[Datum]:
        """Render one row into its datums (answer tokens weighted, the rest 0; see ``reduction``).

        A backend whose ``render_chat_for_sft`` answers (Tinker's renderers) gives the examples and weights its
        renderer trains on — several for a chat whose history renders differently from where each
        assistant turn is trained; otherwise one datum, its assistant turns found by :func:`assistant_mask`.
        """
        p = self.params
        messages = example_messages(example, p.user_template)
        examples = self.backend.render_chat_for_sft(messages)
        if examples is None:
            tokens, mask = assistant_mask(self.backend, messages)
            return [build_sft_datum(tokens, mask, p.max_length, p.reduction)]
        return [build_sft_datum(tokens, [w > 0 for w in weights], p.max_length, p.reduction) for tokens, weights in examples]

    def build_datum(self, example: PromptExample | ChatPromptExample | ChatExample) -> Datum:
        """Render one row and build its datum: the last of :meth:`build_datums` (the whole conversation)."""
        return self.build_datums(example)[-1]

    def train_step(self, batch: Sequence[PromptExample | ChatPromptExample | ChatExample], step: int) -> dict[str, float]:
        """One cross-entropy step on the batch's answer tokens.

        ``train/mean_loss`` is the loss per unit of weight: with ``reduction: mean`` the mean over the
        batch's datums of each one's per-token loss, with ``none`` the per-token loss of the batch.
        """
        datums = [datum for example in batch for datum in self.build_datums(example)]
        datums = [d for d in datums if any(w > 0 for w in d.weights or [])]
        metrics = {
            "train/target_tokens": float(sum(1 for d in datums for w in d.weights or [] if w > 0)),
            "train/tokens": float(sum(len(d.input_tokens) for d in datums)),
        }
        if not datums:
            return {**metrics, "train/mean_loss": 0.0, "train/skipped": 1.0}
        result = self.backend.forward_backward(datums, "cross_entropy")
        optim = self.optimizer_step()
        total_weight = sum(sum(d.weights or []) for d in datums)
        return {
            **backend_metrics(result, optim),
            **metrics,
            "train/loss_sum": float(result.loss_sum),
            "train/mean_loss": safe_div(result.loss_sum, total_weight),
            "train/skipped": 0.0,
        }
