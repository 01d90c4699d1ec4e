"""Verify outputs against tasks and score benchmarks.

:func:`verify` scores one output; :func:`score_tasks` scores n samples per task concurrently and
computes metrics; :func:`score_benchmark` also generates the samples with your function.
A verifier that raises scores 0 with its error recorded, and scoring goes on.
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from evsys.schema.rows import TaskRow, VerifierSpec
from evsys.verifiers.extract import canonical_answer, extract, final_answer, find_numbers, prepare
from evsys.verifiers.kinds import DEFAULT_FUNCTION
from evsys.verifiers.metrics import PASS_THRESHOLD, accuracy_stderr, compute_metric
from evsys.verifiers.sandbox import SandboxUnavailable, sandbox_setting
from evsys.verifiers.tasks import task_prompt

__all__ = ["BenchmarkScore", "Verification", "builtin_registry", "score_benchmark", "score_tasks", "verify"]

_DEFAULT_SPEC = VerifierSpec()
_SLOW_FUNCTIONS = frozenset({"python_tests", "math_equiv"})
_LOCAL_KINDS = frozenset({"in_process", "python"})


@dataclass
class Verification:
    """The verdict on one output: ``score`` in [0, 1], ``passed`` (score >= 1 - 1e-9, or the
    ``threshold`` option), the verifier's ``error`` when it raised, and the ``extracted`` answer when
    the ``extract`` option was given."""

    score: float
    passed: bool
    error: str | None = None
    extracted: str | None = None


@dataclass
class BenchmarkScore:
    """What :func:`score_tasks` returns: metrics by the names asked (NaN as ``None``; ``accuracy``
    brings ``accuracy_stderr``), one prediction row per sample, and the verifications per task."""

    metrics: dict[str, float | None]
    predictions: list[dict[str, Any]]
    verifications: list[list[Verification]] = field(default_factory=list)

    @property
    def scores(self) -> list[list[float]]:
        """Per-task sample scores (e.g. as GRPO rewards)."""
        return [[v.score for v in task] for task in self.verifications]

    @property
    def errors(self) -> int:
        """How many verifications raised."""
        return sum(v.error is not None for task in self.verifications for v in task)


_BUILTIN: Any = None


def builtin_registry() -> Any:
    """A registry holding only this package's plugin (no entry-point scan)."""
    global _BUILTIN
    if _BUILTIN is None:
        from evsys.schema.plugins import build_registry
        from evsys.verifiers import plugin

        _BUILTIN = build_registry([("evsys-verifiers", plugin)], autoload=False)
    return _BUILTIN


def _resolve_registry(registry: Any) -> Any:
    """``registry``, else the installed plugins' registry, else (autoload off) the built-ins alone."""
    if registry is not None:
        return registry
    from evsys.schema.plugins import default_registry

    default = default_registry()
    if default.find("verifier", "in_process") is None:
        return builtin_registry()
    return default


_KINDS: weakref.WeakKeyDictionary[Any, dict[str, Callable[..., Any]]] = weakref.WeakKeyDictionary()


def _builder(registry: Any, kind: str) -> Callable[..., Any]:
    table = _KINDS.setdefault(registry, {})
    builder = table.get(kind)
    if builder is None:
        builder = table[kind] = registry.get("verifier", kind).load()
    return builder


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _as_score(raw: Any) -> float:
    if isinstance(raw, bool):
        return 1.0 if raw else 0.0
    score = float(raw)
    if math.isnan(score) or not 0.0 <= score <= 1.0:
        raise ValueError(f"the verifier returned {raw!r}, outside [0, 1]")
    return score


def verify(output: str, task: TaskRow, registry: Any = None) -> Verification:
    """Score one ``output`` for ``task`` with the task's verifier.

    The verifier sees the output's final answer (:func:`~evsys.verifiers.extract.final_answer`: the
    text after a thinking block), so a thinking model is scored on its answer, not its reasoning.
    ``registry`` defaults to the installed plugins (see :func:`builtin_registry`). A verifier that
    raises gives score 0 and ``error`` set, never an exception.
    """
    output = final_answer(output)
    spec = task.verifier or _DEFAULT_SPEC
    options = spec.options
    threshold = options.get("threshold", PASS_THRESHOLD) if options else PASS_THRESHOLD
    extracted = None
    how = options.get("extract") if options else None
    if how is not None and how != "none":
        try:
            extracted = extract(prepare(output), how)
        except Exception:
            extracted = None
    try:
        registry = _resolve_registry(registry)
        verifier = _builder(registry, spec.kind)(spec, registry)
        if spec.sandbox is None:
            raw = verifier(output, task.resolved_expected)
        else:
            with sandbox_setting(spec.sandbox):
                raw = verifier(output, task.resolved_expected)
        if isinstance(raw, Verification):
            return raw
        score = _as_score(raw)
    except SandboxUnavailable:
        raise  # the sandbox was demanded: never score without it
    except (Exception, SystemExit) as exc:
        return Verification(0.0, False, _error_text(exc), extracted)
    return Verification(score, score >= float(threshold), None, extracted)


def _is_slow(task: TaskRow) -> bool:
    spec = task.verifier or _DEFAULT_SPEC
    if spec.kind not in _LOCAL_KINDS:
        return True
    return spec.kind == "in_process" and (spec.fn_name or DEFAULT_FUNCTION) in _SLOW_FUNCTIONS


def vote_answer(output: str, task: TaskRow, verification: Verification) -> str:
    """The normalized answer a sample votes for in ``maj@k``: the extracted answer when there is
    one, the last number for ``numeric_match``, the chosen label for ``multiple_choice``, else the output."""
    if verification.extracted is not None:
        return canonical_answer(verification.extracted)
    spec = task.verifier or _DEFAULT_SPEC
    fn_name = spec.fn_name or DEFAULT_FUNCTION
    text = prepare(final_answer(output))
    if spec.kind == "in_process" and fn_name == "numeric_match":
        numbers = find_numbers(text.replace("$", " "))
        from evsys.verifiers.extract import parse_number

        if parse_number(text) is None and numbers:
            return canonical_answer(numbers[-1])
    elif spec.kind == "in_process" and fn_name == "multiple_choice":
        from evsys.verifiers.answer_match import _chosen_label

        choices = spec.options.get("choices")
        labels = spec.options.get("labels")
        label_set = "".join(labels) if labels else "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[: len(choices)] if choices else None
        label = _chosen_label(text, label_set or "ABCDEFGHIJKLMNOPQRSTUVWXYZ", choices)
        if label is not None:
            return label
    return canonical_answer(text)


def default_workers() -> int:
    """Threads driving subprocess verifiers: one per CPU core available to this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def score_tasks(
    tasks: Sequence[TaskRow],
    answers: Sequence[Sequence[str]],
    metrics: Sequence[str],
    *,
    registry: Any = None,
    max_workers: int | None = None,
    step: int | None = None,
    prompts: Sequence[str] | None = None,
) -> BenchmarkScore:
    """Score ``answers[i]`` (the n samples for ``tasks[i]``) and compute ``metrics`` (``pass@1``, ``maj@4``...).

    Cheap in-process verifiers run in the calling thread; ``python_tests``, ``math_equiv``,
    ``subprocess`` and plugin kinds run on ``max_workers`` threads (default: the CPU cores), each
    driving child processes — nothing is ever forked from this process, so it may hold a CUDA
    context. ``prompts[i]`` is the prompt as shown to the model (default: :func:`task_prompt`).
    """
    if len(answers) != len(tasks):
        raise ValueError(f"{len(tasks)} tasks but answers for {len(answers)}")
    if prompts is not None and len(prompts) != len(tasks):
        raise ValueError(f"{len(tasks)} tasks but {len(prompts)} prompts")
    registry = _resolve_registry(registry)
    for name in metrics:  # fail on an unknown metric before any verifier runs
        from evsys.verifiers.metrics import resolve_metric

        resolve_metric(name, registry)
    results: list[list[Verification | None]] = [[None] * len(samples) for samples in answers]
    slow = [(i, j) for i, task in enumerate(tasks) if _is_slow(task) for j in range(len(answers[i]))]
    pool = None
    futures = []
    if slow:
        pool = ThreadPoolExecutor(max_workers=max_workers or default_workers(), thread_name_prefix="evsys-verify")
        futures = [(i, j, pool.submit(verify, str(answers[i][j]), tasks[i], registry)) for i, j in slow]
    try:
        for i, task in enumerate(tasks):
            if _is_slow(task):
                continue
            row = results[i]
            for j, output in enumerate(answers[i]):
                row[j] = verify(str(output), task, registry)
        for i, j, future in futures:
            results[i][j] = future.result()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    verifications: list[list[Verification]] = [[v for v in row if v is not None] for row in results]

    predictions: list[dict[str, Any]] = []
    for i, task in enumerate(tasks):
        prompt = prompts[i] if prompts is not None else task_prompt(task)
        task_id = task.resolved_id
        expected = task.resolved_expected
        for j, verification in enumerate(verifications[i]):
            output = str(answers[i][j])
            answer = final_answer(output)
            row: dict[str, Any] = {"task_id": task_id, "prompt": prompt, "answer": answer}
            if answer != output:  # a thinking model: keep the reasoning beside the scored answer
                row["output"] = output
            row.update(
                score=verification.score,
                passed=verification.passed,
                step=step,
                sample_index=j,
                expected=expected,
                error=verification.error,
            )
            predictions.append(row)

    per_task_scores = [[v.score for v in row] for row in verifications]
    per_task_passed = [[v.passed for v in row] for row in verifications]
    needs_votes = any(not name.startswith(("pass", "mean", "accuracy")) for name in metrics)
    per_task_answers = (
        [
            [vote_answer(str(answers[i][j]), tasks[i], v) for j, v in enumerate(row)]
            for i, row in enumerate(verifications)
        ]
        if needs_votes
        else None
    )
    values: dict[str, float | None] = {}
    for name in metrics:
        values[name] = compute_metric(
            name, per_task_scores, per_task_answers, per_task_passed=per_task_passed, registry=registry
        )
        if name == "accuracy":
            stderr = accuracy_stderr(per_task_scores, passed=per_task_passed)
            values["accuracy_stderr"] = None if math.isnan(stderr) else stderr
    return BenchmarkScore(values, predictions, verifications)


def score_benchmark(
    tasks: Sequence[TaskRow],
    generate: Callable[[list[TaskRow], int], Sequence[Sequence[str]]],
    metrics: Sequence[str],
    *,
    n: int = 1,
    registry: Any = None,
    max_workers: int | None = None,
    step: int | None = None,
    prompts: Sequence[str] | None = None,
) -> BenchmarkScore:
    """Generate ``n`` samples per task with ``generate(tasks, n)`` (a list of n strings per task) and score them."""
    answers = generate(list(tasks), n)
    if len(answers) != len(tasks):
        raise ValueError(f"generate returned answers for {len(answers)} of {len(tasks)} tasks")
    return score_tasks(tasks, answers, metrics, registry=registry, max_workers=max_workers, step=step, prompts=prompts)
