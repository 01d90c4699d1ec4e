"""The run config: what ``evsys validate`` checks and ``evsys run`` executes.

The pydantic models here mirror ``schemas/run_config.schema.json``; ``params`` of each
``kind`` are validated separately against the params model its plugin registered.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from evsys.schema.base import StrictModel
from evsys.schema.rows import VerifierSpec

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


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


#: EvSys fields ``columns`` may map besides the keys of ``inputs``
ROW_FIELDS = ("expected", "messages", "id", "metadata")
#: benchmark task fields ``columns`` may map
TASK_FIELDS = ("instruction", "prompt", "question", "messages", "expected", "id", "metadata")


class DataSpec(StrictModel):
    """The training data: a jsonl file, or a dataset read with Hugging Face ``datasets`` (``source_kind: hf``)."""

    source_kind: str = Field(
        default="jsonl",
        min_length=1,
        description=(
            "Data source kind: 'jsonl' (one JSON object per line) or 'hf' (a Hub dataset id, a save_to_disk "
            "directory, or parquet/csv/json/jsonl/arrow files, globs allowed)."
        ),
    )
    path: str = Field(
        min_length=1,
        description=(
            "jsonl: the file. hf: a local path or glob (relative to the working directory), or a Hub dataset id "
            "such as 'openai/gsm8k'."
        ),
    )
    split: str | None = Field(default=None, min_length=1, description="hf: the dataset split to read; default 'train'.")
    subset: str | None = Field(
        default=None, min_length=1, description="hf: the dataset's configuration (load_dataset's 'name'), e.g. 'main'."
    )
    columns: dict[str, str] | None = Field(
        default=None,
        description=(
            "EvSys field -> dataset column, e.g. {question: q, expected: a}: 'expected', 'messages', 'id' and "
            "'metadata' fill those fields, any other name a key of 'inputs'. Other columns are ignored. "
            "Omitted: each row is taken as it is."
        ),
    )
    transform: str | None = Field(
        default=None,
        description=(
            "Name of a registered transform (@register_transform) turning raw rows into examples; with "
            "'columns', it receives the raw row and 'columns' maps what it returns."
        ),
    )

    @model_validator(mode="after")
    def _check_source_options(self) -> DataSpec:
        if self.source_kind == "jsonl":
            for key in ("split", "subset"):
                if getattr(self, key) is not None:
                    raise ValueError(f"'{key}' applies to source_kind 'hf', not 'jsonl'")
        if self.columns is not None and not self.columns:
            raise ValueError("'columns' is empty; map at least one field, e.g. {question: q, expected: a}")
        return self


class BenchmarkSpec(StrictModel):
    """A benchmark of verifier-scored tasks, scored in the loop or after training."""

    name: str = Field(pattern=NAME_PATTERN, description="Benchmark name; metric keys are '<split>/<name>/<metric>'.")
    path: str | None = Field(
        default=None, min_length=1, description="Directory holding tasks.jsonl (or give 'data' instead)."
    )
    data: DataSpec | None = Field(
        default=None,
        description=(
            "The tasks as a dataset, with the keys of the top-level 'data' (source_kind, path, split, subset, "
            "columns). 'columns' maps task fields (instruction, prompt, question, messages, expected, id, "
            "metadata) to dataset columns."
        ),
    )
    verifier: VerifierSpec | None = Field(
        default=None,
        description=(
            "How every task of 'data' is scored, e.g. {fn_name: numeric_match}; each row's 'expected' column "
            "is the reference answer. Default: exact_match."
        ),
    )
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

    @model_validator(mode="after")
    def _check_source(self) -> BenchmarkSpec:
        if (self.path is None) == (self.data is None):
            raise ValueError("a benchmark needs exactly one of 'path' (a directory holding tasks.jsonl) or 'data'")
        if self.verifier is not None and self.data is None:
            raise ValueError("'verifier' applies to a benchmark's 'data'; tasks.jsonl rows carry their own")
        if self.data is not None and self.data.columns is not None:
            unknown = sorted(set(self.data.columns) - set(TASK_FIELDS))
            if unknown:
                raise ValueError(
                    f"data.columns: unknown task field '{unknown[0]}' (fields: {', '.join(TASK_FIELDS)})"
                )
        return self


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
