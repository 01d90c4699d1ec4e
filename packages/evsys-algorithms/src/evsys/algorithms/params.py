"""The params every built-in algorithm shares: :class:`~evsys.schema.params.TrainingParams` plus the
prompt template. Imports no torch."""

from __future__ import annotations

from pydantic import Field, field_validator

from evsys.data.templates import template_fields
from evsys.schema.params import TrainingParams

__all__ = ["AlgorithmParams"]


class AlgorithmParams(TrainingParams):
    """Training params (learning rate, steps, batch, LoRA rank, seed, checkpoints) and ``user_template``."""

    user_template: str = Field(
        default="{question}",
        description=(
            "str.format template over a PromptExample's inputs; renders the user turn the model is prompted "
            "with (chat and task rows are shown as they are)."
        ),
    )

    @field_validator("user_template")
    @classmethod
    def _check_user_template(cls, value: str) -> str:
        template_fields(value)
        return value
