"""``mlflow``: an MLflow run, in a sqlite store under the run directory by default (``evsys-logging[mlflow]``).

Uses ``MlflowClient`` only (no global active run), so ``mlflow-skinny`` (plus sqlalchemy and alembic
for the sqlite store) is enough. By default the run is in ``<run dir>/mlflow.db`` with its artifacts
in ``<run dir>/mlartifacts``; ``tracking_uri`` points it at a server or a shared store. The resolved
config is logged as params (flattened: ``algorithm.params.learning_rate``) and as the artifact
``resolved_config.json``; every metrics row is logged at its step; the final summary is the artifact
``summary.json``, the tag ``evsys.status`` and the run's own status (FINISHED, FAILED or KILLED).

MLflow names allow letters, digits and ``_ - . / :`` and spaces, so metric names are translated by
:func:`mlflow_name`: ``@`` becomes ``_at_`` and ``^`` ``_hat_`` (``val/gsm8k/pass@1`` is
``val/gsm8k/pass_at_1``), any other character ``_``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from evsys.logging.params import MlflowParams
from evsys.logging.tracker import RunSummary, TrackerCallback, flatten
from evsys.schema.protocols import RunContext

#: the sqlite store and the artifact folder inside the run directory when ``tracking_uri`` is not set
DEFAULT_STORE = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
#: longest param value logged (the whole config is also the artifact resolved_config.json)
MAX_PARAM_LENGTH = 500
#: entities per ``log_batch`` call (MLflow accepts at most 100 params and 1000 metrics per batch)
BATCH = 100
RUN_STATUS = {"completed": "FINISHED", "interrupted": "KILLED"}
#: loggers that announce a new sqlite store's table creation at INFO, in the middle of the run's own output
STORE_SETUP_LOGGERS = ("mlflow.store.db.utils", "alembic.runtime.migration")
_REPLACEMENTS = {"@": "_at_", "^": "_hat_"}
_INVALID = re.compile(r"[^/\w.\- :]")


def mlflow_name(key: str) -> str:
    """``key`` as a valid MLflow metric or param name: ``@`` -> ``_at_``, ``^`` -> ``_hat_``, other invalid characters -> ``_``."""
    for old, new in _REPLACEMENTS.items():
        key = key.replace(old, new)
    return _INVALID.sub("_", key)


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."


@contextmanager
def quiet_store_setup() -> Iterator[None]:
    """Hold MLflow's store-setup loggers at WARNING (their INFO lines say only that tables are created)."""
    loggers = [logging.getLogger(name) for name in STORE_SETUP_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


class MlflowTracker(TrackerCallback):
    """Logs config, metrics rows and the summary to an MLflow run."""

    name = "mlflow"

    def __init__(self, params: MlflowParams | None = None, **kwargs: Any) -> None:
        super().__init__(params or MlflowParams(), **kwargs)
        self.params: MlflowParams
        self.tracking_uri: str | None = None
        self._client: Any = None

    def start(self, context: RunContext, config: dict[str, Any]) -> None:
        """Create (or, resuming, reopen) the run in the experiment; log the config as params and artifact."""
        with quiet_store_setup():
            self._start(context, config)

    def _start(self, context: RunContext, config: dict[str, Any]) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        params = self.params
        run_dir = Path(context.run_dir).resolve()
        artifacts = params.artifact_location
        if params.tracking_uri:
            self.tracking_uri = params.tracking_uri
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            self.tracking_uri = f"sqlite:///{(run_dir / DEFAULT_STORE).as_posix()}"
            artifacts = artifacts or (run_dir / DEFAULT_ARTIFACTS).as_uri()
        client = MlflowClient(tracking_uri=self.tracking_uri)
        experiment = client.get_experiment_by_name(params.experiment_name)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            experiment_id = client.create_experiment(params.experiment_name, artifact_location=artifacts)
        if self.resume_id:
            client.update_run(self.resume_id, status="RUNNING")
            self.run_id = self.resume_id
        else:
            tags = {"evsys.config_name": context.run_name, "evsys.run_dir": str(context.run_dir), **params.tags}
            run = client.create_run(experiment_id, run_name=params.run_name or context.run_name, tags=tags)
            self.run_id = run.info.run_id
            entries = [Param(mlflow_name(key), _param_value(value)) for key, value in flatten(config).items()]
            for start in range(0, len(entries), BATCH):
                client.log_batch(self.run_id, params=entries[start : start + BATCH])
            client.log_dict(self.run_id, config, "resolved_config.json")
        self._client = client

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """One ``log_batch`` with every metric of the row at ``step``."""
        if not metrics or self._client is None:
            return
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        entries = [Metric(mlflow_name(key), value, stamp, step) for key, value in metrics.items()]
        self._client.log_batch(self.run_id, metrics=entries)

    def finish(self, summary: RunSummary) -> None:
        """Log ``summary.json`` and the status tag, then end the run with the matching MLflow status."""
        if self._client is None:
            return
        client, self._client = self._client, None
        try:
            client.log_dict(self.run_id, summary.as_dict(), "summary.json")
            client.set_tag(self.run_id, "evsys.status", summary.status)
        finally:
            client.set_terminated(self.run_id, status=RUN_STATUS.get(summary.status, "FAILED"))
