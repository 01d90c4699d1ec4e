"""The config's benchmarks in a run: their tasks loaded before training, scored at a step.

:func:`evaluate` is the one scoring path, shared by the run loop's in-loop and final benchmarks and
by ``evsys eval`` (:mod:`evsys.engine.evaluation`), so their numbers are comparable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from evsys.data.benchmarks import load_dataset_tasks
from evsys.engine.run_setup import plural
from evsys.schema.protocols import Backend, Callback, EvalResult
from evsys.schema.rows import TaskRow
from evsys.schema.validation import ValidatedConfig

__all__ = ["EVAL_BATCH_SIZE", "LoadedBenchmark", "describe_benchmarks", "evaluate", "evaluate_and_notify", "load_benchmarks"]

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


def load_benchmarks(validated: ValidatedConfig) -> list[LoadedBenchmark]:
    """Load every benchmark's tasks before training starts, so a bad file stops the run early."""
    from evsys.verifiers.tasks import load_benchmark_dir

    loaded = []
    for spec in validated.config.metadata.benchmark:
        tasks = load_benchmark_dir(spec.path) if spec.path is not None else load_dataset_tasks(spec)
        if spec.limit is not None:
            tasks = tasks[: spec.limit]
        loaded.append(
            LoadedBenchmark(
                spec.name, spec.split, spec.run_every, list(spec.metrics), spec.num_samples, spec.max_new_tokens, spec.temperature, tasks
            )
        )
    return loaded


def describe_benchmarks(benchmarks: Sequence[LoadedBenchmark]) -> str:
    """``benchmarks: val (12 tasks, every 1 step), test (30 tasks, after training)``, or ``benchmarks: none``."""
    if not benchmarks:
        return "benchmarks: none"
    parts = []
    for bench in benchmarks:
        when = f"every {plural(bench.run_every, 'step')}" if bench.run_every is not None else "after training"
        parts.append(f"{bench.name} ({plural(len(bench.tasks), 'task')}, {when})")
    return "benchmarks: " + ", ".join(parts)


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


def evaluate_and_notify(backend: Backend, benchmark: LoadedBenchmark, step: int, seed: int, callbacks: Sequence[Callback]) -> EvalResult:
    """:func:`evaluate`, announced to the callbacks by ``eval_started`` and reported by ``on_eval_end``."""
    for callback in callbacks:
        callback.eval_started(benchmark.name, len(benchmark.tasks), step)
    result = evaluate(backend, benchmark, step, seed)
    for callback in callbacks:
        callback.on_eval_end(result)
    return result
