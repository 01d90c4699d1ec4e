"""The Python API: ``from evsys.cli import run``.

    result = run("examples/sdft_walkthrough/config.local.yaml")
    print(result)   # Status / Metrics / Logs, as the walkthrough shows
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from evsys.engine.loop import TrainingRun
from evsys.engine.overrides import Override, load_config_with_overrides
from evsys.engine.status import RunOutcome
from evsys.schema.errors import ConfigError, Problem
from evsys.schema.plugins import default_registry
from evsys.schema.protocols import Callback
from evsys.schema.registry import PluginRegistry
from evsys.schema.validation import ValidatedConfig


def run(
    config: str | Path | ValidatedConfig,
    *,
    registry: PluginRegistry | None = None,
    callbacks: Sequence[Callback] = (),
    overwrite: bool = False,
    resume: bool = False,
    dry_run: bool = False,
    overrides: Sequence[str | Override] = (),
) -> RunOutcome:
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
    return TrainingRun(validated, registry, extra_callbacks=callbacks, overwrite=overwrite, resume=resume, dry_run=dry_run).run()
