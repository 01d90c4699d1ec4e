"""The run loop: build the backend, algorithm and callbacks a config names, train, score benchmarks.

Everything is reached through the plugin registry; nothing here knows a backend or algorithm by name.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from evsys.data.examples import load_examples
from evsys.schema.errors import ConfigError, EvsysError, Location, Problem
from evsys.schema.protocols import Backend, BackendSetup, Callback, EvalResult, RunContext
from evsys.schema.registry import PluginRegistry
from evsys.schema.rows import TaskRow
from evsys.schema.validation import ValidatedConfig

EVAL_BATCH_SIZE = 16


@dataclass
class LoadedBenchmark:
    """A benchmark entry of the config with its tasks loaded."""

    name: str
    split: str
    run_every: int | None
    metrics: list[str]
    num_samples: int
    max_new_tokens: int
    temperature: float
    tasks: list[TaskRow]


@dataclass
class RunState:
    """What the loop knows as it goes."""

    step: int = 0
    final_metrics: dict[str, float | None] = field(default_factory=dict)


def template_checks(validated: ValidatedConfig, registry: PluginRegistry) -> dict[str, frozenset[str]]:
    """The algorithm's templates (params field -> extra names) as ``{template text: allowed extra names}``."""
    registration = registry.get("algorithm", validated.config.algorithm.kind)
    checks: dict[str, frozenset[str]] = {}
    for field_name, extra in registration.meta.get("templates", {}).items():
        text = getattr(validated.algorithm_params, field_name, None)
        resolve = getattr(validated.algorithm_params, f"resolved_{field_name}", None)
        if callable(resolve):
            text = resolve()
        if isinstance(text, str):
            checks[text] = frozenset(extra)
    return checks


def load_training_examples(validated: ValidatedConfig, registry: PluginRegistry) -> list[BaseModel]:
    """Every training example, validated for the chosen algorithm (all bad rows reported at once)."""
    config = validated.config
    registration = registry.get("algorithm", config.algorithm.kind)
    return load_examples(
        config.data.path,
        tuple(registration.meta.get("row_models", ())),
        source_kind=config.data.source_kind,
        transform=config.data.transform,
        templates=template_checks(validated, registry),
        registry=registry,
    )


def load_benchmarks(validated: ValidatedConfig) -> list[LoadedBenchmark]:
    """Load every benchmark's tasks before training starts, so a bad file stops the run early."""
    from evsys.verifiers.tasks import load_benchmark_dir

    loaded = []
    for spec in validated.config.metadata.benchmark:
        tasks = load_benchmark_dir(spec.path)
        if spec.limit is not None:
            tasks = tasks[: spec.limit]
        loaded.append(
            LoadedBenchmark(
                spec.name, spec.split, spec.run_every, list(spec.metrics), spec.num_samples, spec.max_new_tokens, spec.temperature, tasks
            )
        )
    return loaded


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


def evaluate(backend: Backend, benchmark: LoadedBenchmark, step: int, seed: int) -> EvalResult:
    """Generate answers for every task (batched) and score them with their verifiers."""
    from evsys.verifiers.scoring import score_tasks
    from evsys.verifiers.tasks import task_messages, task_prompt

    answers: list[list[str]] = []
    tasks = benchmark.tasks
    for start in range(0, len(tasks), EVAL_BATCH_SIZE):
        chunk = tasks[start : start + EVAL_BATCH_SIZE]
        prompts = [backend.render_chat(task_messages(task)) for task in chunk]
        samples = backend.sample(
            prompts,
            n=benchmark.num_samples,
            max_tokens=benchmark.max_new_tokens,
            temperature=benchmark.temperature,
            seed=seed + step,
        )
        answers.extend([sample.text for sample in group] for group in samples)
    score = score_tasks(tasks, answers, benchmark.metrics, step=step, prompts=[task_prompt(t) for t in tasks])
    metrics = {f"{benchmark.split}/{benchmark.name}/{name}": value for name, value in score.metrics.items()}
    return EvalResult(benchmark.name, benchmark.split, step, metrics, score.predictions)


def build_backend(validated: ValidatedConfig, registry: PluginRegistry, run_dir: Path) -> Backend:
    """Construct the configured backend (imports its implementation only now)."""
    config = validated.config
    params = validated.algorithm_params
    backend_class = registry.get("backend", config.backend.kind).load()
    setup = BackendSetup(
        model_name=config.model.name,
        lora_rank=int(getattr(params, "lora_rank", 8)),
        seed=int(getattr(params, "seed", 0)),
        model_revision=config.model.revision,
        run_dir=run_dir,
    )
    return backend_class(setup, validated.backend_params)


def build_callbacks(validated: ValidatedConfig, registry: PluginRegistry, extra: Sequence[Callback] = ()) -> list[Callback]:
    """Construct the configured callbacks, then ``extra`` ones (e.g. the CLI's console progress)."""
    built: list[Callback] = []
    for spec, params in zip(validated.config.callbacks, validated.callback_params, strict=True):
        callback_class = registry.get("callback", spec.kind).load()
        built.append(callback_class(params))
    built.extend(extra)
    return built


def total_steps(algorithm: Any, params: BaseModel, num_examples: int) -> int:
    """The number of optimizer steps: the algorithm's own count if it has one (e.g. from epochs)."""
    counter = getattr(algorithm, "total_steps", None)
    if callable(counter):
        return int(counter(num_examples))
    return int(params.max_steps)


def check_run_dir(run_dir: Path, *, overwrite: bool) -> None:
    """Refuse to write into a run directory that already holds a run, unless told to overwrite."""
    if (run_dir / "metrics.jsonl").exists() and not overwrite:
        raise ConfigError(
            Problem(
                "run directory already holds a run; pass --overwrite to replace it (or change 'name')",
                Location(str(run_dir)),
            )
        )
    if overwrite:
        for name in ("metrics.jsonl", "summary.md"):
            (run_dir / name).unlink(missing_ok=True)
        predictions = run_dir / "predictions"
        if predictions.is_dir():
            for file in predictions.glob("*.jsonl"):
                file.unlink()


class Runner:
    """Runs one validated config to completion (or failure), notifying callbacks on the way."""

    def __init__(self, validated: ValidatedConfig, registry: PluginRegistry, *, extra_callbacks: Sequence[Callback] = (), overwrite: bool = False) -> None:
        self.validated = validated
        self.registry = registry
        self.extra_callbacks = list(extra_callbacks)
        self.overwrite = overwrite
        config = validated.config
        self.output_dir = Path(config.output_dir)
        self.run_dir = self.output_dir / config.name
        self.state = RunState()

    def run(self) -> tuple[str, dict[str, float | None], str | None]:
        """Train and evaluate; returns ``(status, final metrics, error)``. User errors before training raise."""
        validated, registry = self.validated, self.registry
        config = validated.config
        params = validated.algorithm_params
        seed = int(getattr(params, "seed", 0))
        check_run_dir(self.run_dir, overwrite=self.overwrite)
        examples = load_training_examples(validated, registry)
        benchmarks = load_benchmarks(validated)
        algorithm_class = registry.get("algorithm", config.algorithm.kind).load()
        callbacks = build_callbacks(validated, registry, self.extra_callbacks)
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(Problem(f"cannot create the run directory: {exc.strerror}", Location(str(self.run_dir)))) from None
        backend = build_backend(validated, registry, self.run_dir)
        status, error = "completed", None
        try:
            algorithm = algorithm_class(params, backend, None)
            max_steps = total_steps(algorithm, params, len(examples))
            context = RunContext(config.name, self.run_dir, self.output_dir, config, max_steps)
            if hasattr(algorithm, "context"):
                algorithm.context = context
            for callback in callbacks:
                callback.on_run_start(context)
            try:
                self._train(algorithm, backend, examples, benchmarks, callbacks, max_steps, seed)
            except KeyboardInterrupt:
                status, error = "interrupted", "interrupted by the user"
                raise
            except EvsysError as exc:
                status, error = "failed", str(exc)
                raise
            except Exception as exc:
                status, error = "failed", f"{type(exc).__name__}: {exc}"
                raise
            finally:
                for callback in callbacks:
                    callback.on_run_end(status, dict(self.state.final_metrics), error)
        finally:
            backend.close()
        return status, dict(self.state.final_metrics), error

    def _record(self, metrics: dict[str, float | None]) -> None:
        self.state.final_metrics.update(metrics)

    def _train(
        self,
        algorithm: Any,
        backend: Backend,
        examples: list[BaseModel],
        benchmarks: list[LoadedBenchmark],
        callbacks: list[Callback],
        max_steps: int,
        seed: int,
    ) -> None:
        params = self.validated.algorithm_params
        batch_size = int(getattr(params, "batch_size", 1))
        save_every = getattr(params, "save_every", None)
        stream = batches(examples, batch_size, seed)
        for step in range(1, max_steps + 1):
            started = time.perf_counter()
            metrics = dict(algorithm.train_step(next(stream), step))
            metrics.setdefault("train/step_seconds", time.perf_counter() - started)
            self.state.step = step
            self._record({"train/mean_loss": metrics.get("train/mean_loss")} if "train/mean_loss" in metrics else {})
            for callback in callbacks:
                callback.on_step_end(step, metrics)
            for benchmark in benchmarks:
                if benchmark.run_every is not None and step % benchmark.run_every == 0:
                    self._evaluate(backend, benchmark, step, seed, callbacks)
            if save_every and step % save_every == 0 and step != max_steps:
                backend.save_checkpoint(f"step_{step:06d}")
        for benchmark in benchmarks:
            if benchmark.run_every is None:
                self._evaluate(backend, benchmark, max_steps, seed, callbacks)
        backend.save_checkpoint("final")

    def _evaluate(self, backend: Backend, benchmark: LoadedBenchmark, step: int, seed: int, callbacks: list[Callback]) -> None:
        result = evaluate(backend, benchmark, step, seed)
        self._record(result.metrics)
        for callback in callbacks:
            callback.on_eval_end(result)
