"""The run config: what ``evsys validate`` checks and ``evsys run`` executes.

The pydantic models here mirror ``schemas/run_config.schema.json``; ``params`` of each
``kind`` are validated separately against the params model its plugin registered.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from evsys.schema.jsontypes import check_json_type

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


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


class ModelSpec(StrictModel):
    """Which base model to post-train."""

    name: str = Field(
        min_length=1,
        description=(
            "Base model: a local directory, a Hugging Face hub id (the local backend reads the hub cache and "
            "downloads what is missing when allowed), a Tinker base model name, or the alias 'smollm2-135m-instruct'."
        ),
    )
    revision: str | None = Field(default=None, description="Hub revision (branch, tag or commit) of the model.")


class KindSpec(StrictModel):
    """A plugin chosen by ``kind`` with its ``params``."""

    kind: str = Field(min_length=1, description="Registered name of the plugin (see `evsys plugins`).")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Parameters of the chosen kind, validated against its params model."
    )


class BackendSpec(KindSpec):
    """Where training runs: ``local`` (torch + transformers + peft) or ``tinker`` (the remote service)."""

    kind: str = Field(min_length=1, description="Backend name: 'local' or 'tinker', or a plugin's backend.")


class AlgorithmSpec(KindSpec):
    """The post-training algorithm and its hyperparameters."""

    kind: str = Field(min_length=1, description="Algorithm name: 'sdft', 'sft' or 'grpo', or a plugin's algorithm.")


class CallbackSpec(KindSpec):
    """A callback that observes the run (logging, progress, ...)."""

    kind: str = Field(min_length=1, description="Callback name, e.g. 'local_logger'.")


class DataSpec(StrictModel):
    """The training data."""

    source_kind: str = Field(default="jsonl", min_length=1, description="Data source kind, e.g. 'jsonl'.")
    path: str = Field(min_length=1, description="Path of the data file, relative to the working directory.")
    transform: str | None = Field(
        default=None,
        description="Name of a registered transform (@register_transform) turning raw rows into examples.",
    )


class BenchmarkSpec(StrictModel):
    """A benchmark of verifier-scored tasks, scored in the loop or after training."""

    name: str = Field(pattern=NAME_PATTERN, description="Benchmark name; metric keys are '<split>/<name>/<metric>'.")
    path: str = Field(min_length=1, description="Directory holding tasks.jsonl.")
    run_every: int | None = Field(
        default=None,
        ge=1,
        description="Score every N training steps; omitted: scored once, after training.",
    )
    metrics: list[str] = Field(
        default_factory=lambda: ["pass@1"],
        min_length=1,
        description="Metric names, e.g. 'pass@1', 'pass@4', 'mean@4', 'maj@4', 'accuracy'.",
    )
    split: str = Field(
        default="val",
        pattern=r"^[A-Za-z][A-Za-z0-9_-]*$",
        description="A label (e.g. 'val' or 'test') that keeps benchmarks' metrics apart; it does not decide when an entry runs.",
    )
    num_samples: int = Field(default=1, ge=1, description="Samples per task (n for pass@k; k must not exceed it).")
    max_new_tokens: int = Field(default=64, ge=1, description="Longest answer the model may generate per task.")
    temperature: float = Field(default=0.0, ge=0.0, description="Sampling temperature; 0 is greedy.")
    limit: int | None = Field(default=None, ge=1, description="Score only the first N tasks.")


class MetadataSpec(StrictModel):
    """Run metadata: benchmarks and free-form tags."""

    benchmark: list[BenchmarkSpec] = Field(default_factory=list, description="Benchmarks scored during or after training.")
    tags: list[str] = Field(default_factory=list, description="Free-form labels recorded in the run directory.")
    notes: str | None = Field(default=None, description="Free-form notes recorded in the run directory.")


def _default_callbacks() -> list[CallbackSpec]:
    return [CallbackSpec(kind="local_logger")]


class RunConfig(StrictModel):
    """One post-training run."""

    name: str = Field(
        default="run", pattern=NAME_PATTERN, description="Run name; outputs go to '<output_dir>/<name>/'."
    )
    output_dir: str = Field(
        default="outputs", min_length=1, description="Directory that holds run directories, relative to the working directory."
    )
    model: ModelSpec = Field(description="The base model.")
    backend: BackendSpec = Field(description="Where training runs.")
    algorithm: AlgorithmSpec = Field(description="The post-training algorithm.")
    data: DataSpec = Field(description="The training data: a source kind, a path and an optional transform.")
    metadata: MetadataSpec = Field(default_factory=MetadataSpec, description="Benchmarks and tags.")
    callbacks: list[CallbackSpec] = Field(
        default_factory=_default_callbacks,
        description="Callbacks observing the run; default: [{kind: local_logger}].",
    )
