"""Score a config's benchmarks without training, on the base model or a checkpoint (``evsys eval``).

The same scoring as in the run loop (:func:`evsys.engine.benchmarks.evaluate`) and the same files as a run
(``local_logger``: ``metrics.jsonl``, ``predictions/<benchmark>.jsonl``, ``summary.md``), written to
``<output_dir>/<name>/eval/<label>/`` where label is ``base`` or the checkpoint's directory name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evsys.engine.benchmarks import describe_benchmarks, evaluate_and_notify, load_benchmarks
from evsys.engine.checkpoints import FINAL, find_checkpoint, step_of
from evsys.engine.overrides import Override, load_config_with_overrides
from evsys.engine.run_setup import announce, build_backend, check_callback_object, check_dry_run, training_params
from evsys.engine.rundir import DRY_RUN_SUFFIX, DirectoryLock
from evsys.engine.status import EvalOutcome, tracked_status
from evsys.logging.local import METRICS_FILE, PREDICTIONS_DIR, SUMMARY_FILE, LocalLogger
from evsys.logging.params import LocalLoggerParams
from evsys.schema.errors import ConfigError, Location, Problem
from evsys.schema.plugins import default_registry
from evsys.schema.protocols import Callback, RunContext
from evsys.schema.registry import PluginRegistry
from evsys.schema.validation import ValidatedConfig

EVAL_DIR = "eval"
BASE_LABEL = "base"


def default_eval_dir(validated: ValidatedConfig, label: str, *, dry_run: bool = False) -> Path:
    """``<output_dir>/<name>/eval/<label>`` (``<name>-dry-run`` for a dry run)."""
    config = validated.config
    return Path(config.output_dir) / (config.name + (DRY_RUN_SUFFIX if dry_run else "")) / EVAL_DIR / label


def resolve_eval_checkpoint(checkpoint: str | None) -> tuple[str | None, str]:
    """``(checkpoint path or URI, label)``: a local path is resolved with :func:`find_checkpoint`; a URI passes through."""
    if checkpoint is None:
        return None, BASE_LABEL
    if "://" in checkpoint:  # a remote backend's checkpoint (e.g. tinker://...)
        return checkpoint, checkpoint.rstrip("/").rsplit("/", 1)[-1] or "checkpoint"
    found = find_checkpoint(checkpoint)
    return str(found), found.name


def default_step(validated: ValidatedConfig, checkpoint: str | None, label: str) -> int:
    """The step the rows are recorded at: 0 for the base model, N for ``step_N``, ``max_steps`` for ``final``."""
    if checkpoint is None:
        return 0
    numbered = step_of(label)
    if numbered is not None:
        return numbered
    if label == FINAL:
        return training_params(validated).max_steps or 0
    return 0


def prepare_eval_dir(directory: Path, *, overwrite: bool) -> None:
    """Create ``directory``; one holding an earlier evaluation is refused unless ``overwrite`` (then its files go)."""
    if (directory / METRICS_FILE).exists():
        if not overwrite:
            raise ConfigError(Problem("already holds an evaluation; pass --overwrite to replace it (or --output DIR)", Location(str(directory))))
        for name in (METRICS_FILE, SUMMARY_FILE):
            (directory / name).unlink(missing_ok=True)
        for file in (directory / PREDICTIONS_DIR).glob("*.jsonl"):
            file.unlink()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(Problem(f"cannot create the eval directory: {exc.strerror}", Location(str(directory)))) from None


def evaluate_config(
    config: str | Path | ValidatedConfig,
    *,
    checkpoint: str | None = None,
    output: str | Path | None = None,
    step: int | None = None,
    registry: PluginRegistry | None = None,
    callbacks: Sequence[Callback] = (),
    overwrite: bool = False,
    dry_run: bool = False,
    overrides: Sequence[str | Override] = (),
) -> EvalOutcome:
    """Score every benchmark of ``config`` on the base model, or on ``checkpoint`` (a run or checkpoint directory).

    Nothing is trained. User mistakes raise :class:`EvsysError` before the model loads; a failure while
    scoring is recorded in ``summary.md`` and re-raised. ``dry_run=True`` scores against the backend's
    simulated service (replacing an earlier dry run's files). An evaluation inside a run directory holds
    that run directory's lock (one elsewhere, its own directory's), so it never writes beside a live run.
    """
    registry = registry or default_registry()
    for callback in callbacks:
        check_callback_object(callback)
    if isinstance(config, ValidatedConfig):
        if overrides:
            raise ConfigError(Problem("evaluate_config() takes overrides only with a config path"))
        validated = config
    else:
        validated = load_config_with_overrides(config, registry, overrides)
    benchmarks = load_benchmarks(validated)
    if not benchmarks:
        raise ConfigError(Problem("metadata.benchmark: the config has no benchmarks to score", Location(validated.path)))
    if dry_run:
        check_dry_run(validated, registry)
    checkpoint_path, label = resolve_eval_checkpoint(checkpoint)
    directory = Path(output) if output is not None else default_eval_dir(validated, label, dry_run=dry_run)
    at_step = default_step(validated, checkpoint_path, label) if step is None else step
    locked = lock_dir(validated, directory)
    with DirectoryLock(locked, "run directory" if locked != directory else "eval directory"):
        prepare_eval_dir(directory, overwrite=overwrite or dry_run)
        return _score(validated, registry, benchmarks, directory, checkpoint_path, label, at_step, callbacks, dry_run)


def lock_dir(validated: ValidatedConfig, directory: Path) -> Path:
    """The directory whose lock an evaluation into ``directory`` takes: the config's run directory when
    ``directory`` lies inside it, else ``directory`` itself."""
    config = validated.config
    run_dir = Path(config.output_dir) / config.name
    try:
        directory.resolve().relative_to(run_dir.resolve())
    except ValueError:
        return directory
    return run_dir


def _score(
    validated: ValidatedConfig,
    registry: PluginRegistry,
    benchmarks: list[Any],
    directory: Path,
    checkpoint_path: str | None,
    label: str,
    at_step: int,
    callbacks: Sequence[Callback],
    dry_run: bool,
) -> EvalOutcome:
    observers: list[Callback] = [LocalLogger(LocalLoggerParams(dir=str(directory))), *callbacks]
    config_model = validated.config
    context = RunContext(
        f"{config_model.name}/{EVAL_DIR}/{label}", directory, Path(config_model.output_dir), config_model, at_step, at_step
    )
    seed = training_params(validated).seed
    announce(callbacks, describe_benchmarks(benchmarks))
    announce(callbacks, f"model: loading {config_model.model.name} on the {config_model.backend.kind} backend ...")
    backend = build_backend(validated, registry, directory, dry_run=dry_run)
    metrics: dict[str, float | None] = {}
    try:
        if checkpoint_path is not None:
            announce(callbacks, f"model: loading checkpoint {checkpoint_path} ...")
            backend.load_checkpoint(checkpoint_path)
        for observer in observers:
            observer.on_run_start(context)
        with tracked_status(observers, lambda: metrics, directory) as status:
            for benchmark in benchmarks:
                result = evaluate_and_notify(backend, benchmark, at_step, seed, observers)
                metrics.update(result.metrics)
    finally:
        backend.close()
    return EvalOutcome(status.value, metrics, directory, status.error, checkpoint=checkpoint_path, step=at_step)
