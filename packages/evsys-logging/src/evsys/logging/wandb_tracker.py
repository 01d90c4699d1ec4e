"""``wandb``: a Weights & Biases run, offline under the run directory by default (``evsys-logging[wandb]``).

The resolved config is the W&B run config, every metrics row is logged at its step (``train/...``
and ``<split>/<benchmark>/...`` keys, as in ``metrics.jsonl``), and the final metrics, status and
step count go to the run summary. ``mode: offline`` (the default) needs no account and no network:
the run is written to ``<run dir>/wandb/offline-run-*/`` and uploaded later with
``wandb sync <that folder>``. W&B's console capture and system-metrics sampling are off: the run's
own output stays as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evsys.logging.params import WandbParams
from evsys.logging.tracker import RunSummary, TrackerCallback
from evsys.schema.protocols import RunContext

#: W&B exit codes by run status (a non-zero code marks the W&B run failed)
EXIT_CODES = {"completed": 0, "interrupted": 255}


class WandbTracker(TrackerCallback):
    """Logs config, metrics rows and the summary to a W&B run."""

    name = "wandb"

    def __init__(self, params: WandbParams | None = None, **kwargs: Any) -> None:
        super().__init__(params or WandbParams(), **kwargs)
        self.params: WandbParams
        self.directory: Path | None = None
        self._run: Any = None

    def start(self, context: RunContext, config: dict[str, Any]) -> None:
        """``wandb.init`` in the configured mode, continuing the checkpoint's W&B run when resuming."""
        import wandb

        params = self.params
        self.directory = Path(params.dir) if params.dir else context.run_dir
        self.directory.mkdir(parents=True, exist_ok=True)
        tags = list(dict.fromkeys([*params.tags, *getattr(getattr(context.config, "metadata", None), "tags", [])]))
        settings = wandb.Settings(console="off", x_disable_stats=True, x_disable_machine_info=True, disable_git=True, save_code=False, silent=True)
        self._run = wandb.init(
            project=params.project,
            entity=params.entity,
            name=params.run_name or context.run_name,
            group=params.group,
            tags=tags or None,
            mode=params.mode,
            dir=str(self.directory),
            config=config,
            id=self.resume_id,
            resume="allow" if self.resume_id else None,
            settings=settings,
        )
        self.run_id = str(self._run.id)

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """``run.log(row, step=step)`` (W&B merges the train and benchmark rows of one step)."""
        if metrics and self._run is not None:
            self._run.log(metrics, step=step)

    def finish(self, summary: RunSummary) -> None:
        """Put the final metrics, status, steps and error in the run summary, then ``run.finish``."""
        if self._run is None:
            return
        run, self._run = self._run, None
        try:
            run.summary.update({**summary.final_metrics, "status": summary.status, "steps": summary.last_step})
            if summary.error:
                run.summary["error"] = summary.error
        finally:
            run.finish(exit_code=EXIT_CODES.get(summary.status, 1))
