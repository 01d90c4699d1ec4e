"""SDFT: the student rolls out on-policy; the frozen base model, shown the gold answer, is the teacher.

tinker-cookbook's SDFT recipe (``tinker_cookbook.distillation.sdft``, top-K forward KL). Each step,
for each PromptExample ``{inputs, expected}``:

1. the student samples a completion of the rendered ``user_template`` (``backend.sample``);
2. the teacher prompt (``teacher_template``, by default the paper's, one user turn) is rendered and the
   student's completion tokens are appended; ``backend.topk_logprobs(..., k=topk,
   from_position=len(teacher_prompt))`` gives the frozen base model's top-K next-token distribution at
   every answer position (both steps through :meth:`Backend.sample_and_score <evsys.schema.protocols.Backend.sample_and_score>`, so a
   backend can score each rollout as soon as it returns);
3. the student is trained by cross-entropy toward that distribution, its ids at or above the
   tokenizer's length dropped and the rest renormalized, skipping the first ``skip_first_tokens``
   answer positions:
   ``loss = -sum_t sum_k q_t(k) log p_student(k | student_prompt, completion[:t])`` (Tinker's
   ``cross_entropy`` with ``(N, K)`` targets and weights), then one AdamW step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from evsys.algorithms.common import (
    AlgorithmBase,
    backend_metrics,
    first_expected,
    logsumexp,
    prompt_messages,
    render_prompt,
    safe_div,
    sampling_seed,
    tokenizer_size,
)
from evsys.algorithms.sdft.params import SDFTParams, resolve_teacher_template
from evsys.data.templates import render_template
from evsys.schema.protocols import Backend, Datum, Message, RenderedChats, RunContext, TopKLogprobs
from evsys.schema.rows import ChatPromptExample, PromptExample


def renormalize(logprobs: Sequence[float]) -> list[float]:
    """Probabilities of the K listed tokens renormalized to sum to 1: ``softmax(logprobs)``."""
    total = logsumexp(logprobs)
    if total == -math.inf:
        return [0.0 for _ in logprobs]
    return [math.exp(lp - total) if lp != -math.inf else 0.0 for lp in logprobs]


def entropy(probs: Sequence[float]) -> float:
    """Shannon entropy (nats) of a distribution given as probabilities."""
    return -sum(p * math.log(p) for p in probs if p > 0.0)


def teacher_distribution(
    token_ids: Sequence[int], logprobs: Sequence[float], vocab_size: int | None = None
) -> tuple[list[int], list[float]]:
    """The distilled target of one answer position: the teacher's top-K ids below ``vocab_size`` (ids the
    service returns for special tokens past the tokenizer are dropped, as tinker-cookbook does) and
    their probabilities renormalized to sum to 1. Empty when no id is left."""
    kept = [(int(t), float(lp)) for t, lp in zip(token_ids, logprobs, strict=True) if vocab_size is None or t < vocab_size]
    if not kept:
        return [], []
    return [t for t, _ in kept], renormalize([lp for _, lp in kept])


def build_sdft_datum(
    student_prompt: Sequence[int],
    completion_tokens: Sequence[int],
    teacher_topk: TopKLogprobs,
    skip_first_tokens: int = 0,
    vocab_size: int | None = None,
) -> Datum:
    """The distillation datum of one rollout (pure; identical on every backend).

    ``full = student_prompt + completion``; ``input_tokens = full[:-1]`` (length N); row ``n`` predicts
    ``full[n + 1]``. Answer token ``j`` is predicted at row ``P - 1 + j`` (``P = len(student_prompt)``),
    where ``target_tokens`` holds the teacher's top-K ids and ``weights`` their probabilities
    (:func:`teacher_distribution`: ids at or above ``vocab_size`` dropped, the rest renormalized).
    Prompt rows, the first ``skip_first_tokens`` answer rows and rows with no id left have weight 0
    (their target ids are 0, a placeholder). ``teacher_topk`` has one row per completion token.
    """
    prompt_len = len(student_prompt)
    n_answer = len(completion_tokens)
    if prompt_len < 1:
        raise ValueError("the student prompt is empty")
    if len(teacher_topk.token_ids) != n_answer or len(teacher_topk.logprobs) != n_answer:
        raise ValueError(f"teacher top-k has {len(teacher_topk.token_ids)} rows for {n_answer} completion tokens")
    k = max((len(row) for row in teacher_topk.token_ids), default=1) or 1
    full = [*student_prompt, *completion_tokens]
    n_rows = len(full) - 1
    targets: list[list[int]] = [[0] * k for _ in range(n_rows)]
    weights: list[list[float]] = [[0.0] * k for _ in range(n_rows)]
    for j in range(skip_first_tokens, n_answer):
        ids, probs = teacher_distribution(teacher_topk.token_ids[j], teacher_topk.logprobs[j], vocab_size)
        row = prompt_len - 1 + j
        targets[row] = ids + [0] * (k - len(ids))
        weights[row] = probs + [0.0] * (k - len(probs))
    return Datum(input_tokens=full[:-1], target_tokens=targets, weights=weights)


def teacher_messages(params: SDFTParams, example: PromptExample | ChatPromptExample) -> list[Message]:
    """The student's prompt turns with the last user turn replaced by ``teacher_template``, filled
    from inputs, that turn's text (``{prompt}``) and the answer."""
    answer = first_expected(example.expected)
    turns = prompt_messages(example, params.user_template)
    values: dict[str, Any] = {
        **(example.inputs if isinstance(example, PromptExample) else {}),
        "prompt": turns[-1]["content"],
        "expected": answer,
        "demo": answer,
    }
    return [*turns[:-1], {"role": "user", "content": render_template(resolve_teacher_template(params.teacher_template), values)}]


class SDFT(AlgorithmBase):
    """Self-distillation fine-tuning (``algorithm.kind: sdft``); built as ``SDFT(params, backend, context)``."""

    params: SDFTParams

    def __init__(self, params: SDFTParams, backend: Backend, context: RunContext | None = None) -> None:
        super().__init__(params, backend, context)
        self.teacher_template = resolve_teacher_template(params.teacher_template)

    @classmethod
    def chats(cls, params: SDFTParams, examples: Sequence[Any]) -> RenderedChats:  # type: ignore[override]
        """The student's prompts and the teacher's (:func:`teacher_messages`) of each prompt row."""
        rendered = super().chats(params, examples)
        rows = [example for example in examples if isinstance(example, PromptExample)]
        rendered.prompts["teacher"] = [teacher_messages(params, row) for row in rows]
        return rendered

    def teacher_messages(self, example: PromptExample | ChatPromptExample) -> list[Message]:
        """:func:`teacher_messages` with this run's params."""
        return teacher_messages(self.params, example)

    def train_step(self, batch: Sequence[PromptExample | ChatPromptExample], step: int) -> dict[str, float]:
        """Roll out, score with the teacher, distill, and take one optimizer step."""
        p = self.params
        prompts = [render_prompt(self.backend, ex, p.user_template) for ex in batch]
        teacher_prompts = [
            list(self.backend.render_chat(self.teacher_messages(ex), add_generation_prompt=True)) for ex in batch
        ]
        groups, scores = self.backend.sample_and_score(
            prompts, teacher_prompts, p.topk, n=p.num_rollouts, max_tokens=p.max_new_tokens,
            temperature=p.temperature, seed=sampling_seed(p.seed, step),
        )
        student_prompts: list[list[int]] = []
        completions: list[list[int]] = []
        teacher: list[TopKLogprobs] = []
        student_logprob_sum = 0.0
        truncated = 0
        rollouts = 0
        for prompt, samples, topks in zip(prompts, groups, scores, strict=True):
            for sample, topk in zip(samples, topks, strict=True):
                rollouts += 1
                truncated += sample.stop_reason == "length"
                tokens = list(sample.tokens)
                if not tokens or topk is None:
                    continue
                student_logprob_sum += sum(sample.logprobs)
                student_prompts.append(prompt)
                completions.append(tokens)
                teacher.append(topk)

        metrics: dict[str, float] = {
            "train/rollout_len": safe_div(sum(len(c) for c in completions), rollouts),
            "train/frac_truncated": safe_div(truncated, rollouts),
            "train/student_logprob": safe_div(student_logprob_sum, sum(len(c) for c in completions)),
        }
        if not completions:
            return {
                **metrics,
                "train/mean_loss": 0.0,
                "train/answer_tokens": 0.0,
                "train/teacher_entropy": 0.0,
                "train/skipped": 1.0,
            }

        vocab_size = tokenizer_size(self.backend.tokenizer)
        datums = [
            build_sdft_datum(sp, comp, tk, p.skip_first_tokens, vocab_size)
            for sp, comp, tk in zip(student_prompts, completions, teacher, strict=True)
        ]
        distilled = [
            [w for w in row if w > 0.0] for d in datums for row in (d.weights or []) if any(w > 0.0 for w in row)
        ]
        answer_tokens = len(distilled)
        metrics["train/teacher_entropy"] = safe_div(sum(entropy(row) for row in distilled), answer_tokens)
        metrics["train/answer_tokens"] = float(answer_tokens)
        if answer_tokens == 0:
            return {**metrics, "train/mean_loss": 0.0, "train/skipped": 1.0}

        result = self.backend.forward_backward(datums, "cross_entropy")
        optim = self.optimizer_step()
        return {
            **backend_metrics(result, optim),
            **metrics,
            "train/loss_sum": float(result.loss_sum),
            "train/mean_loss": safe_div(result.loss_sum, answer_tokens),
            "train/skipped": 0.0,
        }
