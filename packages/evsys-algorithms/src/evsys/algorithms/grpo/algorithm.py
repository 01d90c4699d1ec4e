"""GRPO: group-relative policy gradient with verifier rewards.

Each step, for each row: ``group_size`` on-policy completions (``backend.sample(n=group_size)``), each
scored by a verifier (``evsys.verifiers.scoring.verify``); advantages are the rewards centered within
the group (tinker-cookbook's ``compute_advantages``; divided by the group's std + eps with
``scale_rewards: true``). Groups whose rewards are all equal carry no reward signal and are left out
of the loss (unless a KL penalty gives their tokens one). The datums go to the backend's
``importance_sampling`` or ``ppo`` loss with exactly the inputs Tinker documents for it
(``target_tokens``, ``logprobs``, ``advantages``; the prompt is masked by advantage 0), then one
AdamW step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from evsys.algorithms.common import (
    AlgorithmBase,
    backend_metrics,
    prompt_messages,
    safe_div,
    sampling_seed,
)
from evsys.algorithms.grpo.params import GRPOParams
from evsys.schema.protocols import Backend, Datum, RunContext, SampledSequence
from evsys.schema.rows import ChatPromptExample, PromptExample, TaskRow, VerifierSpec
from evsys.verifiers.tasks import task_messages

ADVANTAGE_EPS = 1e-6


def group_advantages(rewards: Sequence[float], scale_rewards: bool = False, eps: float = ADVANTAGE_EPS) -> list[float]:
    """Group-relative advantages: ``r - mean(r)``, divided by ``std(r) + eps`` when ``scale_rewards``.

    ``std`` is the population standard deviation of the group. A group whose rewards are all equal
    gets all-zero advantages.
    """
    values = [float(r) for r in rewards]
    if not values or all(v == values[0] for v in values):
        return [0.0 for _ in values]
    mean = sum(values) / len(values)
    centered = [v - mean for v in values]
    if not scale_rewards:
        return centered
    std = math.sqrt(sum(c * c for c in centered) / len(centered))
    return [c / (std + eps) for c in centered]


def build_rl_datum(
    prompt_tokens: Sequence[int],
    completion_tokens: Sequence[int],
    sampler_logprobs: Sequence[float],
    advantages: float | Sequence[float],
) -> Datum:
    """The policy-gradient datum of one completion (pure; Tinker's layout, tinker-cookbook's inputs).

    ``full = prompt + completion``; ``input_tokens = full[:-1]``, ``target_tokens = full[1:]``. Row
    ``n`` predicts ``full[n + 1]``: on prompt rows ``logprobs`` and ``advantages`` are 0 (advantage 0 is
    the mask: the RL losses take no ``weights``); on completion rows they are the sampler's logprob of
    that token and its advantage (one value for the whole completion, or one per token).
    """
    n_prompt = len(prompt_tokens)
    n_completion = len(completion_tokens)
    if n_prompt < 1:
        raise ValueError("the prompt is empty")
    if len(sampler_logprobs) != n_completion:
        raise ValueError(f"{len(sampler_logprobs)} sampler logprobs for {n_completion} completion tokens")
    per_token = (
        [float(advantages)] * n_completion if isinstance(advantages, (int, float)) else [float(a) for a in advantages]
    )
    if len(per_token) != n_completion:
        raise ValueError(f"{len(per_token)} advantages for {n_completion} completion tokens")
    full = [int(t) for t in (*prompt_tokens, *completion_tokens)]
    pad = [0.0] * (n_prompt - 1)
    return Datum(
        input_tokens=full[:-1],
        target_tokens=full[1:],
        logprobs=pad + [float(x) for x in sampler_logprobs],
        advantages=pad + per_token,
    )


def kl_log_ratios(sample: SampledSequence, base_logprobs: Sequence[float]) -> list[float]:
    """Per-token ``log pi(token) - log pi_base(token)`` of one completion (the k1 KL estimator), from the
    sampler's logprobs and the base model's exact logprobs of the same tokens."""
    return [float(lp) - float(b) for lp, b in zip(sample.logprobs, base_logprobs, strict=True)]


class GRPO(AlgorithmBase):
    """Group-relative policy optimization (``algorithm.kind: grpo``); built as ``GRPO(params, backend, context)``."""

    params: GRPOParams

    def __init__(self, params: GRPOParams, backend: Backend, context: RunContext | None = None) -> None:
        super().__init__(params, backend, context)

    def prompt_and_task(self, row: PromptExample | ChatPromptExample | TaskRow, index: int) -> tuple[list[int], TaskRow]:
        """The prompt tokens of a row and the task its completions are verified against.

        A PromptExample (or ChatPromptExample) becomes a task scored by ``reward_fn`` (``module:function`` means the
        ``python`` verifier kind) with the row's ``expected`` and ``reward_options``.
        """
        if isinstance(row, TaskRow):
            return list(self.backend.render_chat(task_messages(row), add_generation_prompt=True)), row
        p = self.params
        messages = prompt_messages(row, p.user_template)
        prompt = list(self.backend.render_chat(messages, add_generation_prompt=True))
        kind = "python" if ":" in p.reward_fn else "in_process"
        task = TaskRow(
            task_id=row.id or f"example_{index}",
            instruction=messages[-1]["content"],
            verifier=VerifierSpec(
                kind=kind, fn_name=p.reward_fn, expected=row.expected, options=dict(p.reward_options)
            ),
            metadata=dict(row.metadata),
        )
        return prompt, task

    def reward(self, output: str, task: TaskRow) -> tuple[float, bool]:
        """The verifier's score of ``output`` in [0, 1], and whether verification raised an error."""
        from evsys.verifiers.scoring import verify  # lazy: keeps plugin registration light

        result = verify(output, task)
        return float(result.score), result.error is not None

    def train_step(self, batch: Sequence[PromptExample | ChatPromptExample | TaskRow], step: int) -> dict[str, float]:
        """Sample groups, score them, and take one policy-gradient optimizer step."""
        p = self.params
        prepared = [self.prompt_and_task(row, i) for i, row in enumerate(batch)]
        prompts = [prompt for prompt, _ in prepared]
        groups = self.backend.sample(
            prompts,
            n=p.group_size,
            max_tokens=p.max_new_tokens,
            temperature=p.temperature,
            seed=sampling_seed(p.seed, step),
        )
        all_rewards: list[float] = []
        errors = 0
        equal_groups = 0
        kept: list[tuple[list[int], SampledSequence, float]] = []
        for (prompt, task), samples in zip(prepared, groups, strict=True):
            rewards = []
            for sample in samples:
                score, failed = self.reward(sample.text, task)
                rewards.append(score)
                errors += failed
            all_rewards.extend(rewards)
            advantages = group_advantages(rewards, p.scale_rewards)
            if all(a == 0.0 for a in advantages):
                equal_groups += 1
                if p.kl_coef == 0:  # no reward signal and no KL penalty: nothing to train on
                    continue
            kept.extend((prompt, s, a) for s, a in zip(samples, advantages, strict=True) if s.tokens)

        reward_mean = safe_div(sum(all_rewards), len(all_rewards))
        metrics: dict[str, float] = {
            "train/reward_mean": reward_mean,
            "train/reward_std": math.sqrt(safe_div(sum((r - reward_mean) ** 2 for r in all_rewards), len(all_rewards))),
            "train/frac_groups_all_equal": safe_div(equal_groups, len(prepared)),
            "train/completion_len": safe_div(sum(len(s.tokens) for g in groups for s in g), len(all_rewards)),
            "train/reward_errors": float(errors),
        }
        tokens = sum(len(s.tokens) for _, s, _ in kept)
        metrics["train/tokens"] = float(tokens)
        if not kept:
            # No group has a reward spread (and no KL penalty): no gradient; the optimizer step is skipped
            # (no AdamW momentum or weight-decay drift without a signal). The run loop still counts the step.
            return {**metrics, "train/mean_loss": 0.0, "train/skipped": 1.0}

        per_token_advantages: list[list[float]] = [[a] * len(s.tokens) for _, s, a in kept]
        if p.kl_coef > 0:
            metrics.update(self._fold_kl(kept, per_token_advantages))
        datums = [
            build_rl_datum(prompt, sample.tokens, sample.logprobs, advs)
            for (prompt, sample, _), advs in zip(kept, per_token_advantages, strict=True)
        ]
        config: dict[str, float] | None = None
        if p.loss_fn == "ppo":
            config = {"clip_low_threshold": p.clip_low_threshold, "clip_high_threshold": p.clip_high_threshold}
        result = self.backend.forward_backward(datums, p.loss_fn, config)
        optim = self.optimizer_step()
        return {
            **backend_metrics(result, optim),
            **metrics,
            "train/loss_sum": float(result.loss_sum),
            "train/mean_loss": safe_div(result.loss_sum, tokens),
            "train/skipped": 0.0,
        }

    def _fold_kl(
        self, kept: list[tuple[list[int], SampledSequence, float]], advantages: list[list[float]]
    ) -> dict[str, Any]:
        """Fold ``kl_coef * (mean log-ratio - log-ratio_t)`` into each token's advantage (tinker-cookbook's
        ``incorporate_kl_penalty``), with the base model's exact logprobs of the sampled tokens from
        ``compute_logprobs(base=True)``. Mutates ``advantages``."""
        p = self.params
        sequences = [prompt + list(sample.tokens) for prompt, sample, _ in kept]
        base = self.backend.compute_logprobs(sequences, [len(prompt) for prompt, _, _ in kept], base=True)
        ratios = [kl_log_ratios(sample, b) for (_, sample, _), b in zip(kept, base, strict=True)]
        count = sum(len(r) for r in ratios)
        mean_ratio = safe_div(sum(sum(r) for r in ratios), count)
        for advs, rs in zip(advantages, ratios, strict=True):
            for t, r in enumerate(rs):
                advs[t] += p.kl_coef * (mean_ratio - r)
        return {"train/kl_base": mean_ratio}
