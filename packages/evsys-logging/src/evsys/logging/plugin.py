"""Registers the built-in callbacks: ``local_logger``, ``console`` and the trackers ``tensorboard``, ``wandb``, ``mlflow``.

The trackers register exactly as a third-party callback would; each names the module its
implementation imports (``requires``) and the extra that installs it, so ``evsys validate --deep``
and ``evsys run`` can say what to install without importing anything.
"""

from __future__ import annotations

from pydantic import BaseModel

from evsys.logging.params import ConsoleParams, LocalLoggerParams, MlflowParams, TensorBoardParams, WandbParams
from evsys.schema.plugins import hookimpl
from evsys.schema.registry import Registrar

#: the trackers: name -> (target, params model, what it writes)
TRACKERS: dict[str, tuple[str, type[BaseModel], str]] = {
    "tensorboard": (
        "evsys.logging.tensorboard_tracker:TensorBoardTracker",
        TensorBoardParams,
        "TensorBoard event files (metrics, config, summary) in <run dir>/tensorboard",
    ),
    "wandb": (
        "evsys.logging.wandb_tracker:WandbTracker",
        WandbParams,
        "A Weights & Biases run (offline in <run dir>/wandb by default): metrics, config, summary",
    ),
    "mlflow": (
        "evsys.logging.mlflow_tracker:MlflowTracker",
        MlflowParams,
        "An MLflow run (sqlite store <run dir>/mlflow.db by default): metrics, config as params, summary",
    ),
}


def install_hint(extra: str) -> str:
    """``pip install 'evsys-logging[<extra>]'``."""
    return f"pip install 'evsys-logging[{extra}]'"


@hookimpl
def evsys_register(register: Registrar) -> None:
    """Register ``local_logger``, ``console`` and the trackers (each needs the extra named after it)."""
    register.callback(
        "local_logger",
        "evsys.logging.local:LocalLogger",
        params=LocalLoggerParams,
        description="metrics.jsonl, predictions/<benchmark>.jsonl and summary.md in the run directory.",
    )
    register.callback("console", "evsys.logging.console:ConsoleProgress", params=ConsoleParams, description="A progress line per step on stderr.")
    for name, (target, params, writes) in TRACKERS.items():
        description = f"{writes}; needs evsys-logging[{name}]."
        register.callback(name, target, params=params, requires=(name,), install_hint=install_hint(name), description=description)
