"""Registers the algorithm ``my_algo`` with its own params model."""

from __future__ import annotations

from pydantic import Field

from evsys.schema.params import TrainingParams
from evsys.schema.plugins import hookimpl
from evsys.schema.registry import Registrar
from evsys.schema.rows import PromptExample


class MyAlgoParams(TrainingParams):
    """Params of ``my_algo``: the shared training params plus two of its own."""

    temperature: float = Field(default=0.7, gt=0, description="Sampling temperature of the rollouts.")
    prompt_template: str = Field(default="{question}", description="str.format template over the row's inputs.")
    beam_width: int = Field(default=4, ge=1, le=64, description="Beams kept per prompt.")


@hookimpl
def evsys_register(register: Registrar) -> None:
    """Register ``my_algo`` (its ``prompt_template`` is checked as a template by name)."""
    register.algorithm(
        "my_algo",
        "evsys_my_algo.algorithm:MyAlgo",
        params=MyAlgoParams,
        row_models=(PromptExample,),
        description="An example third-party algorithm.",
    )
