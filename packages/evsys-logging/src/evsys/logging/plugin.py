"""Registers the built-in callbacks: ``local_logger``, ``console`` and the trackers ``tensorboard``, ``wandb``, ``mlflow``.

The trackers register exactly as a third-party callback would; each names the module its
implementation imports (``requires``) and the extra that installs it, so ``evsys validate --deep``
and ``evsys run`` can say what to install without importing anything.
"""

from __future__ import annotations

from evsys.logging.params import ConsoleParams, LocalLoggerParams, MlflowParams, TensorBoardParams, WandbParams
from evsys.schema.plugins import hookimpl
from evsys.schema.registry import Registrar


def install_hint(extra: str) -> str:
    """``pip install 'evsys-logging[<extra>]'``."""
    return f"pip install 'evsys-logging[{extra}]'"


@hookimpl
def evsys_register(register: Registrar) -> None:
    """Register ``local_logger``, ``console``, ``tensorboard``, ``wandb`` and ``mlflow``."""
    register.callback(
        "local_logger",
        "evsys.logging.local:LocalLogger",
        params=LocalLoggerParams,
        description="metrics.jsonl, predictions/<benchmark>.jsonl and summary.md in the run directory.",
    )
    register.callback(
        "console",
        "evsys.logging.console:ConsoleProgress",
        params=ConsoleParams,
        description="A progress line per step on stderr.",
    )
    register.callback(
        "tensorboard",
        "evsys.logging.tensorboard_tracker:TensorBoardTracker",
        params=TensorBoardParams,
        requires=("tensorboard",),
        install_hint=install_hint("tensorboard"),
        description="TensorBoard event files (metrics, config, summary) in <run dir>/tensorboard; needs evsys-logging[tensorboard].",
    )
    register.callback(
        "wandb",
        "evsys.logging.wandb_tracker:WandbTracker",
        params=WandbParams,
        requires=("wandb",),
        install_hint=install_hint("wandb"),
        description="A Weights & Biases run (offline in <run dir>/wandb by default): metrics, config, summary; needs evsys-logging[wandb].",
    )
    register.callback(
        "mlflow",
        "evsys.logging.mlflow_tracker:MlflowTracker",
        params=MlflowParams,
        requires=("mlflow",),
        install_hint=install_hint("mlflow"),
        description="An MLflow run (sqlite store <run dir>/mlflow.db by default): metrics, config as params, summary; needs evsys-logging[mlflow].",
    )
