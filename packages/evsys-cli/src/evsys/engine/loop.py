"""The run loop: build the backend, algorithm and callbacks a config names, train, score benchmarks.

Everything is reached through the plugin registry and the protocols of :mod:`evsys.schema.protocols`;
nothing here knows a backend or algorithm by name, and every method called on a plugin is declared
in its protocol. Reliability (docs/reliability.md): a checkpoint every ``save_every`` steps, on an
interrupt and at the end, each recorded in ``checkpoints/latest`` only once complete
(:mod:`evsys.engine.resume`); ``--resume`` continues from it; SIGINT / SIGTERM stop after the current
step (:mod:`evsys.engine.interrupts`); the run directory (:class:`evsys.engine.rundir.RunDirectory`)
is claimed before the model loads.
"""

from __future__ import annotations

import gc
import logging
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from evsys.engine.benchmarks import LoadedBenchmark, describe_benchmarks, evaluate_and_notify, load_benchmarks
from evsys.engine.interrupts import InterruptGuard
from evsys.engine.metering import MeteredBackend, sampling_metrics
from evsys.engine.pipeline import StepPipeline
from evsys.engine.resume import FINAL_NAME, ResumePoint, python_random_state, restore_python_random, step_name
from evsys.engine.run_setup import (
    announce,
    build_backend,
    build_callbacks,
    check_callback_object,
    check_dry_run,
    load_plugin_class,
    load_training_examples,
    plural,
    training_params,
)
from evsys.engine.rundir import WRITE_ERRORS, RunDirectory
from evsys.engine.status import RunOutcome, tracked_status
from evsys.schema.errors import ConfigError, EvsysError, Location, Problem
from evsys.schema.params import TrainingParams
from evsys.schema.protocols import Algorithm, Backend, Callback, RunContext
from evsys.schema.registry import PluginRegistry
from evsys.schema.validation import ValidatedConfig

__all__ = ["TrainingRun", "batches"]

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


@contextmanager
def setup_frozen() -> Iterator[None]:
    """Keep the objects that exist before training (imports, model, data) out of the garbage collector's
    full passes while training runs, then hand them back: a full pass over the ~10^5 objects of the
    imported libraries costs ~0.3 s of CPU, which would otherwise land inside a step every few steps."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def callback_key(index: int, callback: Callback) -> str:
    """The key of a callback's state in the resume point: its position and class."""
    return f"{index}:{type(callback).__name__}"


class TrainingRun:
    """Runs one validated config to completion, interruption or failure, notifying callbacks on the way.

    ``resume=True`` continues from ``checkpoints/latest`` of the run directory (from the start when
    there is none, setting aside what an earlier attempt wrote); ``overwrite=True`` replaces an
    earlier run. :meth:`run` returns the :class:`~evsys.engine.status.RunOutcome`.
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
        self.params: TrainingParams = training_params(validated)
        for callback in extra_callbacks:
            check_callback_object(callback)
        self.extra_callbacks = list(extra_callbacks)
        self.dry_run = dry_run
        self.directory = RunDirectory(validated, overwrite=overwrite, resume=resume, dry_run=dry_run)
        self.state = RunState()
        self.guard = InterruptGuard()
        self._data_state: dict[str, int] = {}
        self._listeners: list[Callback] = list(self.extra_callbacks)

    # ------------------------------------------------------------------ before training

    def _check_data(self, point: ResumePoint | None, num_examples: int) -> None:
        recorded = point.data if point is not None else {}
        if recorded and recorded.get("num_examples") not in (None, num_examples):
            raise ConfigError(
                Problem(
                    f"the training data changed since the checkpoint ({recorded['num_examples']} examples then, "
                    f"{num_examples} now); resuming needs the same data",
                    Location(self.validated.config.data.path),
                )
            )
        self._data_state = {"num_examples": num_examples, "batch_size": self.params.batch_size, "seed": self.params.seed}

    def run(self) -> RunOutcome:
        """Train and evaluate.

        User errors raise :class:`EvsysError` before the model loads, config and data errors first,
        then the run directory's (in use by a live process, already holding a run, not writable).
        A failure during training is recorded in ``summary.md`` and re-raised — as an
        :class:`EvsysError` naming the file when the environment refused a write.
        """
        validated, registry = self.validated, self.registry
        config = validated.config
        if self.dry_run:
            check_dry_run(validated, registry)
        with self._phase("data"):
            examples = load_training_examples(validated, registry)
            self._announce(f"data: {plural(len(examples), 'training example')} from {config.data.path}")
        with self._phase("benchmarks"):
            benchmarks = load_benchmarks(validated)
            self._announce(describe_benchmarks(benchmarks))
        algorithm_class = load_plugin_class(validated, registry, "algorithm")
        with self.directory:
            point = self.directory.claim()
            self._check_data(point, len(examples))
            callbacks = build_callbacks(validated, registry, self.extra_callbacks)
            self._listeners = list(callbacks)
            with self._phase("model"):
                self._announce(f"model: loading {config.model.name} on the {config.backend.kind} backend ...")
                backend = build_backend(validated, registry, self.directory.path, dry_run=self.dry_run)
            try:
                self.directory.begin(backend)
            except BaseException:
                backend.close()
                raise
            with self.guard:
                return self._run(backend, algorithm_class, examples, benchmarks, callbacks, point)

    def _announce(self, text: str) -> None:
        announce(self._listeners, text)

    @contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        """Time one phase before training; its duration goes to the ``evsys.engine.loop`` logger (INFO)."""
        started = time.perf_counter()
        yield
        logger.info("%s took %.2f s", name, time.perf_counter() - started)

    def _run(
        self,
        backend: Backend,
        algorithm_class: type[Algorithm],
        examples: list[BaseModel],
        benchmarks: list[LoadedBenchmark],
        callbacks: list[Callback],
        point: ResumePoint | None,
    ) -> RunOutcome:
        config, params, run_dir = self.validated.config, self.params, self.directory.path
        try:
            max_steps = int(algorithm_class.total_steps(params, len(examples)))
            if point is not None and point.completed and point.step >= max_steps:
                raise ConfigError(
                    Problem(
                        f"this run already completed all {point.step} steps; nothing to resume "
                        "(raise max_steps to train further, or pass --overwrite to start again)",
                        Location(str(run_dir)),
                    )
                )
            start = point.step if point is not None else 0
            context = RunContext(config.name, run_dir, self.directory.output_dir, config, max_steps, start)
            meter = MeteredBackend(backend, self._first_rollout)
            algorithm = algorithm_class(params, meter, context)
            self._restore(point, meter, algorithm, callbacks)
            for callback in callbacks:
                callback.on_run_start(context)
            with tracked_status(callbacks, lambda: self.state.final_metrics, run_dir, self._kept) as status, setup_frozen():
                self._announce(f"training: steps {start + 1}-{max_steps} of {max_steps} ...")
                status.value = self._train(algorithm, meter, examples, benchmarks, callbacks, max_steps, start)
                status.error = self.guard.reason if status.value == "interrupted" else None
        finally:
            backend.close()
        return RunOutcome(
            status.value,
            dict(self.state.final_metrics),
            self.directory.output_dir,
            status.error,
            run_dir=run_dir,
            exit_code=self.guard.exit_code if status.value == "interrupted" else 0,
            resumed_from_step=start,
        )

    def _first_rollout(self, what: str) -> None:
        self._announce(f"step {self.state.step + 1}: first rollout, {what} ...")

    def _kept(self) -> str:
        last = self.state.last_checkpoint
        where = f"the checkpoint of step {last.step} is intact" if last is not None else "no checkpoint was completed yet"
        return f"; rows up to step {self.state.step} are kept and {where}: fix the cause and rerun with --resume"

    def _restore(self, point: ResumePoint | None, backend: Backend, algorithm: Algorithm, callbacks: list[Callback]) -> None:
        """Load ``point`` into the backend, algorithm and callbacks (callbacks start afresh on a resume without one)."""
        if self.directory.resume:
            saved = point.callbacks if point is not None else {}
            for index, callback in enumerate(callbacks):
                callback.load_state_dict(dict(saved.get(callback_key(index, callback), {})))
        if point is None:
            return
        backend.load_checkpoint(point.checkpoint)
        algorithm.load_state_dict(point.algorithm)
        restore_python_random(point.python_random)
        self.state.step = point.step
        self.state.final_metrics = dict(point.final_metrics)
        self.state.last_checkpoint = point

    # ------------------------------------------------------------------ training

    def _record(self, metrics: dict[str, float | None]) -> None:
        self.state.final_metrics.update(metrics)

    def _checkpoint(self, backend: Backend, algorithm: Algorithm, callbacks: list[Callback], name: str, *, completed: bool = False, reuse: str | None = None) -> None:
        """Save a checkpoint (unless ``reuse`` names one of this step), then point ``latest`` at it."""
        if reuse is None:
            try:
                reuse = backend.save_checkpoint(name)
            except EvsysError:
                raise
            except Exception as exc:
                if isinstance(exc, OSError) and exc.errno in WRITE_ERRORS:
                    raise
                raise EvsysError(
                    Problem(f"could not save checkpoint '{name}': {type(exc).__name__}: {exc}{self._kept()}", Location(str(self.directory.path)))
                ) from None
        point = ResumePoint(
            step=self.state.step,
            name=name,
            checkpoint=str(reuse),
            completed=completed,
            final_metrics=dict(self.state.final_metrics),
            algorithm=dict(algorithm.state_dict()),
            callbacks={callback_key(index, callback): dict(callback.state_dict()) for index, callback in enumerate(callbacks)},
            data=dict(self._data_state),
            python_random=python_random_state(),
        )
        self.directory.record(point)
        self.state.last_checkpoint = point

    def _train(
        self,
        algorithm: Algorithm,
        meter: MeteredBackend,
        examples: list[BaseModel],
        benchmarks: list[LoadedBenchmark],
        callbacks: list[Callback],
        max_steps: int,
        start: int,
    ) -> str:
        """Steps ``start + 1 .. max_steps``, then the final benchmarks; returns 'completed' or 'interrupted'."""
        save_every, seed = self.params.save_every, self.params.seed
        stream = batches(examples, self.params.batch_size, seed, start_step=start)
        steps = self._step_pipeline(algorithm, meter, stream, benchmarks, max_steps)
        backend: Backend = meter
        for step in range(start + 1, max_steps + 1):
            if self.guard.requested and not (steps and steps.in_flight(step)):
                break
            started = time.perf_counter()
            meter.take()
            metrics = steps.run(step) if steps else dict(algorithm.train_step(next(stream), step))
            metrics.setdefault("train/step_seconds", time.perf_counter() - started)
            for key, value in sampling_metrics(meter).items():
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
        self, algorithm: Algorithm, backend: Backend, stream: Iterator[list[Any]], benchmarks: list[LoadedBenchmark], max_steps: int
    ) -> StepPipeline | None:
        """Steps that overlap (evsys.engine.pipeline) when the backend samples off policy; ``None`` otherwise."""
        if backend.max_steps_off_policy < 1:
            return None
        save_every = self.params.save_every

        def overlap(step: int) -> bool:
            evaluates = any(b.run_every is not None and step % b.run_every == 0 for b in benchmarks)
            saves = bool(save_every) and step % save_every == 0
            return step < max_steps and not evaluates and not saves and not self.guard.requested

        return StepPipeline(algorithm, backend, stream, overlap)

    def _evaluate(self, backend: Backend, benchmark: LoadedBenchmark, step: int, seed: int, callbacks: list[Callback]) -> None:
        result = evaluate_and_notify(backend, benchmark, step, seed, callbacks)
        self._record(result.metrics)
