"""The base of every EvSys config, params and row model."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

from evsys.schema.jsontypes import check_json_type


class StrictModel(BaseModel):
    """Base of every EvSys config, params and row model.

    Unknown keys are errors, and a value must already have the JSON type its field declares:
    ``max_steps: "2"`` or ``batch_size: true`` are errors, as the JSON Schema says, rather than
    silently coerced (pydantic's lax mode would accept them). Integral floats (``2.0``) are
    integers, as in JSON Schema; list-for-tuple and the like keep pydantic's lax behaviour.
    """

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _json_type_gate(cls, value: Any, info: ValidationInfo) -> Any:
        if info.field_name is not None:
            check_json_type(cls, info.field_name, value)
        return value
