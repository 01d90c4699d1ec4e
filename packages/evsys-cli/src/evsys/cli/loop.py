"""The run loop: build the backend, algorithm and callbacks a config names, train, score benchmarks.

Everything is reached through the plugin registry; nothing here knows a backend or algorithm by name.
Reliability (docs/reliability.md): a checkpoint every ``save_every`` steps, on an interrupt and at
the end, each recorded in ``checkpoints/latest`` only once complete (:mod:`evsys.cli.resume`);
``--resume`` continues from it; SIGINT / SIGTERM stop after the current step
(:mod:`evsys.cli.interrupts`); the run directory is checked before the model loads
(:mod:`evsys.cli.rundir`).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from evsys.cli.benchmarks import LoadedBenchmark, describe_benchmarks, evaluate_and_notify, load_benchmarks
from evsys.cli.errors import WRITE_ERRORS, describe_write_error
from evsys.cli.interrupts import InterruptGuard
from evsys.cli.metering import MeteredBackend, sampling_metrics
from evsys.cli.pipeline import StepPipeline, pipeline_depth
from evsys.cli.resume import (
    FINAL_NAME,
    ResumePoint,
    python_random_state,
    read_latest,
    remove_stale_temporaries,
    restore_python_random,
    step_name,
    write_latest,
)
from evsys.cli.run_setup import (
    DRY_RUN_SUFFIX,
    announce,
    build_backend,
    build_callbacks,
    check_dry_run,
    load_training_examples,
    plural,
)
from evsys.cli.rundir import (
    DirectoryLock,
    check_run_dir,
    clear_outputs,
    config_snapshot,
    prepare_run_dir,
    read_snapshot,
    refuse_existing,
    resume_conflicts,
    write_snapshot,
)
from evsys.schema.errors import ConfigError, EvsysError, Location, Problem
from evsys.schema.protocols import Backend, Callback, RunContext
from evsys.schema.registry import PluginRegistry
from evsys.schema.validation import ValidatedConfig

__all__ = ["Runner", "batches", "check_run_dir", "total_steps"]

logger = logging.getLogger(__name__)


@dataclass
class RunState:
    """What the loop knows as it goes."""

    step: int = 0
    final_metrics: dict[str, float | None] = field(default_factory=dict)
    last_checkpoint: ResumePoint | None = None


def batches(examples: Sequence[Any], batch_size: int, seed: int, start_step: int = 0) -> Iterator[list[Any]]:
    """Endless batches: each epoch a seeded shuffle; resuming at ``start_step`` yields what would have come next."""
    order: list[int] = []
    epoch = 0
    position = 0
    produced = 0
    while True:
        batch = []
        while len(batch) < batch_size:
            if position >= len(order):
                order = list(range(len(examples)))
                random.Random(seed * 1_000_003 + epoch).shuffle(order)
                epoch += 1
                position = 0
            batch.append(examples[order[position]])
            position += 1
        produced += 1
        if produced > start_step:
            yield batch


def total_steps(algorithm: Any, params: BaseModel, num_examples: int) -> int:
    """The number of optimizer steps: the algorithm's own count if it has one (e.g. from epochs)."""
    counter = getattr(algorithm, "total_steps", None)
    if callable(counter):
        return int(counter(num_examples))
    return int(params.max_steps)



def callback_key(index: int, callback: Callback) -> str:
    """The key of a callback's state in the resume point: its position and class."""
    return f"{index}:{type(callback).__name__}"


def _call_quietly(errors: list[BaseException], method: Any, *args: Any) -> None:
    """Call ``method``; remember an exception instead of letting it hide the run's own outcome."""
    try:
        method(*args)
    except Exception as exc:
        errors.append(exc)


class Runner:
    """Runs one validated config to completion, interruption or failure, notifying callbacks on the way.

    ``resume=True`` continues from ``checkpoints/latest`` of the run directory (from the start when
    there is none, setting aside what an earlier attempt wrote); ``overwrite=True`` replaces an
    earlier run. After :meth:`run`, ``exit_code`` is 0 (completed), 130 or 143 (interrupted by
    SIGINT / SIGTERM), and ``resumed_from_step`` the step the run continued from.
    """

    def __init__(
        self,
        validated: ValidatedConfig,
        registry: PluginRegistry,
        *,
        extra_callbacks: Sequence[Callback] = (),
        overwrite: bool = False,
        resume: bool = False,
        dry_run: bool = False,
    ) -> None:
        self.validated = validated
        self.registry = registry
        self.extra_callbacks = list(extra_callbacks)
        self.dry_run = dry_run
        self.overwrite = overwrite or (dry_run and not resume)
        self.resume = resume
        config = validated.config
        self.output_dir = Path(config.output_dir)
        self.run_dir = self.output_dir / (config.name + (DRY_RUN_SUFFIX if dry_run else ""))
        self.state = RunState()
        self.guard = InterruptGuard()
        self.exit_code = 0
        self.resumed_from_step = 0
        self._data_state: dict[str, int] = {}
        self._listeners: list[Callback] = list(self.extra_callbacks)

    # ------------------------------------------------------------------ before training

    def _resume_point(self) -> ResumePoint | None:
        """The checkpoint to continue from; a config that changed in a way resuming cannot take is an error."""
        if not self.resume:
            return None
        old = read_snapshot(self.run_dir)
        if old is not None:
            problems = resume_conflicts(old, config_snapshot(self.validated), self.validated)
            if problems:
                raise ConfigError(problems)
        return read_latest(self.run_dir)

    def _check_data(self, point: ResumePoint | None, num_examples: int, batch_size: int, seed: int) -> None:
        recorded = point.data if point is not None else {}
        if recorded and recorded.get("num_examples") not in (None, num_examples):
            raise ConfigError(
                Problem(
                    f"the training data changed since the checkpoint ({recorded['num_examples']} examples then, "
                    f"{num_examples} now); resuming needs the same data",
                    Location(self.validated.config.data.path),
                )
            )
        self._data_state = {"num_examples": num_examples, "batch_size": batch_size, "seed": seed}

    def run(self) -> tuple[str, dict[str, float | None], str | None]:
        """Train and evaluate; returns ``(status, final metrics, error)``.

        User errors raise :class:`EvsysError` before the model loads, config and data errors first,
        then the run directory's (in use by a live process, already holding a run, not writable).
        A failure during training is recorded in ``summary.md`` and re-raised — as an
        :class:`EvsysError` naming the file when the environment refused a write.
        """
        validated, registry = self.validated, self.registry
        config = validated.config
        params = validated.algorithm_params
        seed = int(getattr(params, "seed", 0))
        if self.dry_run:
            check_dry_run(validated, registry)
        if self.overwrite and self.resume:
            refuse_existing(self.run_dir, overwrite=True, resume=True)
        with self._phase("data"):
            examples = load_training_examples(validated, registry)
            self._announce(f"data: {plural(len(examples), 'training example')} from {config.data.path}")
        with self._phase("benchmarks"):
            benchmarks = load_benchmarks(validated)
            self._announce(describe_benchmarks(benchmarks))
        algorithm_class = registry.get("algorithm", config.algorithm.kind).load()
        lock = DirectoryLock(self.run_dir).acquire()
        try:
            refuse_existing(self.run_dir, overwrite=self.overwrite, resume=self.resume)
            point = self._resume_point()
            self._check_data(point, len(examples), int(getattr(params, "batch_size", 1)), seed)
            callbacks = build_callbacks(validated, registry, self.extra_callbacks)
            self._listeners = list(callbacks)
            prepare_run_dir(self.run_dir)
            # The backend is built (credentials checked, model resolved) before --overwrite clears anything,
            # so a missing key or model never costs the previous run's outputs.
            with self._phase("model"):
                self._announce(f"model: loading {config.model.name} on the {config.backend.kind} backend ...")
                backend = build_backend(self.validated, self.registry, self.run_dir, dry_run=self.dry_run)
            try:
                if self.overwrite:
                    clear_outputs(self.run_dir)
                remove_stale_temporaries(self.run_dir)
                write_snapshot(self.run_dir, config_snapshot(validated, backend))
            except BaseException:
                backend.close()
                raise
            with self.guard:
                return self._run(backend, algorithm_class, examples, benchmarks, callbacks, point, seed)
        finally:
            lock.release()

    def _announce(self, text: str) -> None:
        announce(self._listeners, text)

    @contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        """Time one phase before training; its duration goes to the ``evsys.cli.loop`` logger (INFO)."""
        started = time.perf_counter()
        yield
        logger.info("%s took %.2f s", name, time.perf_counter() - started)

    def _run(
        self,
        backend: Backend,
        algorithm_class: Any,
        examples: list[BaseModel],
        benchmarks: list[LoadedBenchmark],
        callbacks: list[Callback],
        point: ResumePoint | None,
        seed: int,
    ) -> tuple[str, dict[str, float | None], str | None]:
        config, params = self.validated.config, self.validated.algorithm_params
        status, error = "completed", None
        try:
            meter = MeteredBackend(backend, self._first_rollout)
            algorithm = algorithm_class(params, meter, None)
            max_steps = total_steps(algorithm, params, len(examples))
            if point is not None and point.completed and point.step >= max_steps:
                raise ConfigError(
                    Problem(
                        f"this run already completed all {point.step} steps; nothing to resume "
                        "(raise max_steps to train further, or pass --overwrite to start again)",
                        Location(str(self.run_dir)),
                    )
                )
            start = self._restore(point, meter, algorithm, callbacks)
            context = RunContext(config.name, self.run_dir, self.output_dir, config, max_steps, start)
            if hasattr(algorithm, "context"):
                algorithm.context = context
            for callback in callbacks:
                callback.on_run_start(context)
            try:
                self._announce(f"training: steps {start + 1}-{max_steps} of {max_steps} ...")
                status = self._train(algorithm, meter, examples, benchmarks, callbacks, max_steps, seed, start)
                error = self.guard.reason if status == "interrupted" else None
            except KeyboardInterrupt:
                status, error = "interrupted", "interrupted by the user"
                raise
            except EvsysError as exc:
                status, error = "failed", str(exc)
                raise
            except OSError as exc:
                if exc.errno not in WRITE_ERRORS:
                    status, error = "failed", f"{type(exc).__name__}: {exc}"
                    raise
                status, error = "failed", f"{describe_write_error(exc)}{self._kept()}"
                raise EvsysError(Problem(f"{exc.strerror or exc}{self._kept()}", Location(str(exc.filename or self.run_dir)))) from None
            except Exception as exc:
                status, error = "failed", f"{type(exc).__name__}: {exc}"
                raise
            finally:
                errors: list[BaseException] = []
                for callback in callbacks:
                    _call_quietly(errors, callback.on_run_end, status, dict(self.state.final_metrics), error)
                if errors and status == "completed":
                    raise self._end_error(errors[0])
        finally:
            backend.close()
        self.exit_code = self.guard.exit_code if status == "interrupted" else 0
        return status, dict(self.state.final_metrics), error

    def _first_rollout(self, what: str) -> None:
        self._announce(f"step {self.state.step + 1}: first rollout, {what} ...")

    def _end_error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, OSError) and exc.errno in WRITE_ERRORS:
            return EvsysError(Problem(f"{exc.strerror or exc} (while finishing the run)", Location(str(exc.filename or self.run_dir))))
        return exc

    def _kept(self) -> str:
        last = self.state.last_checkpoint
        where = f"the checkpoint of step {last.step} is intact" if last is not None else "no checkpoint was completed yet"
        return f"; rows up to step {self.state.step} are kept and {where}: fix the cause and rerun with --resume"

    def _restore(self, point: ResumePoint | None, backend: Backend, algorithm: Any, callbacks: list[Callback]) -> int:
        """Load ``point`` into the backend, algorithm and callbacks; returns the step to continue after."""
        if self.resume:
            saved = point.callbacks if point is not None else {}
            for index, callback in enumerate(callbacks):
                load = getattr(callback, "load_state_dict", None)
                if callable(load):
                    load(dict(saved.get(callback_key(index, callback), {})))
        if point is None:
            return 0
        backend.load_checkpoint(point.checkpoint)
        load_algorithm = getattr(algorithm, "load_state_dict", None)
        if callable(load_algorithm):
            load_algorithm(point.algorithm)
        restore_python_random(point.python_random)
        self.state.step = point.step
        self.state.final_metrics = dict(point.final_metrics)
        self.state.last_checkpoint = point
        self.resumed_from_step = point.step
        return point.step

    # ------------------------------------------------------------------ training

    def _record(self, metrics: dict[str, float | None]) -> None:
        self.state.final_metrics.update(metrics)

    def _checkpoint(self, backend: Backend, algorithm: Any, callbacks: list[Callback], name: str, *, completed: bool = False, reuse: str | None = None) -> None:
        """Save a checkpoint (unless ``reuse`` names one of this step), then point ``latest`` at it."""
        step = self.state.step
        if reuse is None:
            try:
                reuse = backend.save_checkpoint(name)
            except EvsysError:
                raise
            except Exception as exc:
                if isinstance(exc, OSError) and exc.errno in WRITE_ERRORS:
                    raise
                raise EvsysError(
                    Problem(f"could not save checkpoint '{name}': {type(exc).__name__}: {exc}{self._kept()}", Location(str(self.run_dir)))
                ) from None
        states: dict[str, dict[str, Any]] = {}
        for index, callback in enumerate(callbacks):
            get_state = getattr(callback, "state_dict", None)
            if callable(get_state):
                states[callback_key(index, callback)] = dict(get_state())
        get_algorithm_state = getattr(algorithm, "state_dict", None)
        point = ResumePoint(
            step=step,
            name=name,
            checkpoint=str(reuse),
            completed=completed,
            final_metrics=dict(self.state.final_metrics),
            algorithm=dict(get_algorithm_state()) if callable(get_algorithm_state) else {},
            callbacks=states,
            data=dict(self._data_state),
            python_random=python_random_state(),
        )
        write_latest(self.run_dir, point)
        self.state.last_checkpoint = point

    def _train(
        self,
        algorithm: Any,
        backend: Backend,
        examples: list[BaseModel],
        benchmarks: list[LoadedBenchmark],
        callbacks: list[Callback],
        max_steps: int,
        seed: int,
        start: int,
    ) -> str:
        """Steps ``start + 1 .. max_steps``, then the final benchmarks; returns 'completed' or 'interrupted'."""
        params = self.validated.algorithm_params
        batch_size = int(getattr(params, "batch_size", 1))
        save_every = getattr(params, "save_every", None)
        stream = batches(examples, batch_size, seed, start_step=start)
        steps = self._step_pipeline(algorithm, backend, stream, benchmarks, max_steps)
        meter = backend if isinstance(backend, MeteredBackend) else None
        for step in range(start + 1, max_steps + 1):
            if self.guard.requested and not (steps and steps.in_flight(step)):
                break
            started = time.perf_counter()
            if meter is not None:
                meter.take()
            metrics = steps.run(step) if steps else dict(algorithm.train_step(next(stream), step))
            metrics.setdefault("train/step_seconds", time.perf_counter() - started)
            for key, value in (sampling_metrics(meter) if meter is not None else {}).items():
                metrics.setdefault(key, value)
            self.state.step = step
            self._record({"train/mean_loss": metrics.get("train/mean_loss")} if "train/mean_loss" in metrics else {})
            for callback in callbacks:
                callback.on_step_end(step, metrics)
            for benchmark in benchmarks:
                if benchmark.run_every is not None and step % benchmark.run_every == 0:
                    self._evaluate(backend, benchmark, step, seed, callbacks)
            if save_every and step % save_every == 0 and step != max_steps:
                self._checkpoint(backend, algorithm, callbacks, step_name(step))
        last = self.state.last_checkpoint
        if self.guard.requested and self.state.step < max_steps:
            if self.state.step > 0 and (last is None or last.step != self.state.step):
                self._checkpoint(backend, algorithm, callbacks, step_name(self.state.step))
            return "interrupted"
        if last is None or last.step != max_steps or last.name != FINAL_NAME:
            self._checkpoint(backend, algorithm, callbacks, FINAL_NAME)
        # scored after training: benchmarks without run_every, and in-loop ones that did not just run
        final = [b for b in benchmarks if b.run_every is None or max_steps % b.run_every != 0]
        for benchmark in final:
            if self.guard.requested:
                return "interrupted"
            self._evaluate(backend, benchmark, max_steps, seed, callbacks)
        checkpoint = self.state.last_checkpoint
        assert checkpoint is not None
        self._checkpoint(backend, algorithm, callbacks, checkpoint.name, completed=True, reuse=checkpoint.checkpoint)
        return "completed"

    def _step_pipeline(
        self, algorithm: Any, backend: Backend, stream: Iterator[list[Any]], benchmarks: list[LoadedBenchmark], max_steps: int
    ) -> StepPipeline | None:
        """Steps that overlap (evsys.cli.pipeline) when the backend samples off policy; ``None`` otherwise."""
        if not pipeline_depth(backend):
            return None
        save_every = getattr(self.validated.algorithm_params, "save_every", None)

        def overlap(step: int) -> bool:
            evaluates = any(b.run_every is not None and step % b.run_every == 0 for b in benchmarks)
            saves = bool(save_every) and step % save_every == 0
            return step < max_steps and not evaluates and not saves and not self.guard.requested

        return StepPipeline(algorithm, backend, stream, overlap)

    def _evaluate(self, backend: Backend, benchmark: LoadedBenchmark, step: int, seed: int, callbacks: list[Callback]) -> None:
        result = evaluate_and_notify(backend, benchmark, step, seed, callbacks)
        self._record(result.metrics)
