"""Params of ``sft``. Imports no torch."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from evsys.algorithms.params import AlgorithmParams


class SFTParams(AlgorithmParams):
    """Params of ``sft``: set ``max_steps``, ``epochs``, or both (the run stops at whichever comes first)."""

    max_steps: int | None = Field(  # type: ignore[assignment]
        default=None, ge=1, description="Number of optimizer steps; with epochs also set, the smaller count wins."
    )
    epochs: float | None = Field(
        default=None, gt=0, description="Passes over the training data; steps = ceil(epochs * examples / batch_size)."
    )
    max_length: int | None = Field(
        default=None,
        ge=2,
        description="Truncate each rendered sequence (prompt + answer) to this many tokens; null: no limit.",
    )

    reduction: Literal["mean", "none"] = Field(
        default="mean",
        description=(
            "How each example's token weights are reduced: 'mean' (the default, as tinker-cookbook's SFT) scales "
            "them to sum to 1, so every example counts the same whatever its length; 'none': weight 1 per answer "
            "token (a raw token sum, longer answers count more)."
        ),
    )

    @model_validator(mode="after")
    def _needs_a_length(self) -> SFTParams:
        if self.max_steps is None and self.epochs is None:
            raise ValueError("set max_steps or epochs (or both)")
        return self
