"""Base params models that algorithm, backend and callback plugins extend."""

from __future__ import annotations

from pydantic import Field

from evsys.schema.config import StrictModel


class NoParams(StrictModel):
    """For a plugin that takes no parameters."""


class TrainingParams(StrictModel):
    """What every algorithm shares; the run loop and the backend read these.

    The adapter's shape (``lora_rank``, ``lora_alpha``) and the ``seed`` live here, whatever the
    backend: the run hands them to the backend in :class:`~evsys.schema.protocols.BackendSetup`.
    """

    learning_rate: float = Field(gt=0, description="AdamW learning rate.")
    max_steps: int = Field(ge=1, description="Number of optimizer steps.")
    batch_size: int = Field(default=1, ge=1, description="Examples per step.")
    lora_rank: int = Field(default=8, ge=1, description="LoRA rank of the trained adapter.")
    lora_alpha: float = Field(
        default=32.0,
        gt=0,
        description=(
            "LoRA scaling numerator (the update is scaled by lora_alpha / lora_rank); 32, the value the Tinker "
            "service fixes, so learning rates carry over between the local and tinker backends."
        ),
    )
    seed: int = Field(default=0, ge=0, description="Seed for data order, sampling and initialization.")
    save_every: int | None = Field(
        default=None, ge=1, description="Save a checkpoint every N steps (one is always saved at the end)."
    )
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    grad_clip: float | None = Field(default=None, gt=0, description="Clip the gradient norm to this value; null (the default, as on Tinker): no clipping. Losses are raw sums, so norms grow with the batch.")
