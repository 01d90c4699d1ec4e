"""Params of ``grpo``. Imports no torch."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from evsys.algorithms.params import AlgorithmParams


class GRPOParams(AlgorithmParams):
    """Params of ``grpo``: group sampling, verifier rewards, advantage normalization and the RL loss."""

    group_size: int = Field(
        default=4, ge=2, description="On-policy samples per prompt; advantages are relative within this group."
    )
    max_new_tokens: int = Field(default=64, ge=1, description="Longest sampled completion, in tokens.")
    temperature: float = Field(
        default=1.0, gt=0, description="Sampling temperature (must be > 0: a group of greedy samples is all equal)."
    )
    reward_fn: str = Field(
        default="contains",
        description=(
            "Verifier that scores PromptExample rows against their expected answer: a registered in-process "
            "function name (e.g. 'contains', 'exact_match') or 'module:function'. Task rows use their own verifier."
        ),
    )
    reward_options: dict[str, Any] = Field(default_factory=dict, description="Keyword options passed to reward_fn.")
    scale_rewards: bool = Field(
        default=False,
        description=(
            "Also divide the group-centered rewards by the group's standard deviation (+ eps), as the GRPO paper "
            "and TRL do; false (the default, as tinker-cookbook and Dr. GRPO): centering only."
        ),
    )
    loss_fn: Literal["importance_sampling", "ppo"] = Field(
        default="importance_sampling",
        description="Policy-gradient loss as the backend defines it: 'importance_sampling' (REINFORCE with an importance ratio) or 'ppo' (clipped).",
    )
    clip_low_threshold: float = Field(
        default=0.8, gt=0, description="ppo: lower bound of the clipped probability ratio."
    )
    clip_high_threshold: float = Field(
        default=1.2, gt=0, description="ppo: upper bound of the clipped probability ratio."
    )
    kl_coef: float = Field(
        default=0.0,
        ge=0,
        description=(
            "Weight of a KL penalty toward the frozen base model (exact base logprobs of the sampled tokens), "
            "folded into the advantages as tinker-cookbook's kl_penalty_coef; 0: off."
        ),
    )

    @model_validator(mode="after")
    def _check_clip(self) -> GRPOParams:
        if not self.clip_low_threshold <= 1.0 <= self.clip_high_threshold:
            raise ValueError("need clip_low_threshold <= 1 <= clip_high_threshold (they bound the ratio p/q)")
        return self
