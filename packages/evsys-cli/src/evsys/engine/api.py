"""The Python API: ``from evsys.cli import run``.

    result = run("examples/sdft_walkthrough/config.local.yaml")
    print(result)   # Status / Metrics / Logs, as the walkthrough shows
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from evsys.engine.loop import Runner
from evsys.engine.overrides import Override, load_config_with_overrides
from evsys.schema.errors import ConfigError, Problem
from evsys.schema.plugins import default_registry
from evsys.schema.protocols import Callback
from evsys.schema.registry import PluginRegistry
from evsys.schema.validation import ValidatedConfig

LOG_FILES = "metrics.jsonl, predictions/, summary.md"


@dataclass
class RunResult:
    """What a run ends with: its status, final metrics and where the logs are."""

    status: str
    metrics: dict[str, float | None]
    logs: Path
    run_dir: Path
    error: str | None = None
    exit_code: int = 0
    resumed_from_step: int = 0

    def __str__(self) -> str:
        lines = [
            f"Status:    {self.status}",
            f"Metrics:   {self.metrics}",
            f"Logs:      {self.logs} ({LOG_FILES})",
        ]
        if self.error:
            lines.append(f"Error:     {self.error}")
        return "\n".join(lines)


def run(
    config: str | Path | ValidatedConfig,
    *,
    registry: PluginRegistry | None = None,
    callbacks: Sequence[Callback] = (),
    overwrite: bool = False,
    resume: bool = False,
    dry_run: bool = False,
    overrides: Sequence[str | Override] = (),
) -> RunResult:
    """Validate ``config`` (a path or an already validated config) and run it.

    ``resume=True`` continues the run directory's last complete checkpoint (see docs/reliability.md);
    ``overwrite=True`` replaces an earlier run; without either, an existing run directory is an error.
    ``overrides`` (``"algorithm.params.max_steps=10"`` strings, as ``--set`` takes them) change keys of
    a config path before validation (:mod:`evsys.engine.overrides`).
    User mistakes raise :class:`evsys.schema.errors.EvsysError` before training starts; a failure
    during training is re-raised after ``summary.md`` records it. SIGINT / SIGTERM stop the run after
    the current step with a checkpoint: the result's status is ``interrupted`` and ``exit_code`` 130 / 143.
    ``dry_run=True`` runs against the backend's simulated service, in ``<output_dir>/<name>-dry-run``.
    """
    registry = registry or default_registry()
    if isinstance(config, (str, Path)):
        validated = load_config_with_overrides(config, registry, overrides)
    elif isinstance(config, ValidatedConfig) and not overrides:
        validated = config
    else:
        got = "a validated config with overrides" if isinstance(config, ValidatedConfig) else type(config).__name__
        raise ConfigError(Problem(f"run() takes a config path (or a validated config without overrides), got {got}"))
    runner = Runner(validated, registry, extra_callbacks=callbacks, overwrite=overwrite, resume=resume, dry_run=dry_run)
    status, metrics, error = runner.run()
    return RunResult(status, metrics, runner.output_dir, runner.run_dir, error, runner.exit_code, runner.resumed_from_step)
