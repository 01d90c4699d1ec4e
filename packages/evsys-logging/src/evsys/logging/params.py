"""Params of the built-in callbacks (no heavy imports: the plugin loads this at validate time)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from evsys.schema.config import StrictModel


class LocalLoggerParams(StrictModel):
    """Params of ``local_logger``."""

    dir: str | None = Field(
        default=None,
        description="Write here instead of the run directory '<output_dir>/<name>/'.",
    )
    fsync: bool = Field(
        default=False,
        description="fsync each row after writing (survives a power loss, slower); rows are always flushed.",
    )


class ConsoleParams(StrictModel):
    """Params of ``console``."""

    every: int = Field(default=1, ge=1, description="Print a line every N steps.")


class TensorBoardParams(StrictModel):
    """Params of ``tensorboard``."""

    log_dir: str | None = Field(
        default=None,
        description="Directory of the event files; default '<run dir>/tensorboard' (`tensorboard --logdir <output_dir>` shows every run).",
    )
    flush_secs: float = Field(
        default=10.0, gt=0, description="Write pending events to disk at least this often (they are always written at the end)."
    )


class WandbParams(StrictModel):
    """Params of ``wandb`` (Weights & Biases)."""

    project: str = Field(default="evsys", min_length=1, description="W&B project the run belongs to.")
    entity: str | None = Field(default=None, description="W&B team or user; default: the account's default entity.")
    run_name: str | None = Field(default=None, description="Display name of the W&B run; default: the config's 'name'.")
    mode: Literal["offline", "online", "disabled"] = Field(
        default="offline",
        description="'offline' writes under dir with no network (upload later with `wandb sync`); 'online' streams to the W&B server (needs WANDB_API_KEY or `wandb login`).",
    )
    dir: str | None = Field(default=None, description="Where W&B writes its 'wandb/' folder; default: the run directory.")
    group: str | None = Field(default=None, description="W&B group, e.g. a sweep's name.")
    tags: list[str] = Field(default_factory=list, description="W&B tags; the config's metadata.tags are added.")


class MlflowParams(StrictModel):
    """Params of ``mlflow``."""

    tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI (a server 'http://...', 'sqlite:///path/mlflow.db', 'databricks'); default: 'sqlite:///<run dir>/mlflow.db'.",
    )
    artifact_location: str | None = Field(
        default=None,
        description="Where a newly created experiment keeps artifacts (resolved_config.json, summary.json); default: '<run dir>/mlartifacts' with the default tracking_uri, else the tracking server's choice.",
    )
    experiment_name: str = Field(default="evsys", min_length=1, description="MLflow experiment; created when missing.")
    run_name: str | None = Field(default=None, description="Name of the MLflow run; default: the config's 'name'.")
    tags: dict[str, str] = Field(default_factory=dict, description="Extra run tags.")
