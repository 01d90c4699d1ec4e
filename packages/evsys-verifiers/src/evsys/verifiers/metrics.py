"""Benchmark metrics over per-task sample scores: ``pass@k``, ``pass^k``, ``mean@k``, ``maj@k``, ``accuracy``.

``per_task_scores[i]`` holds the scores of task i's n samples, in sample order. A sample *passes*
when its score is at least ``1 - 1e-9`` (or when ``passed`` says so). A task with fewer than k
samples gives NaN for a ``@k`` metric and is left out of the mean; a metric that no task can give
is ``None``.

A metric plugin registers ``"module:function"`` with the same signature as the built-ins::

    def my_metric(per_task_scores, *, k=None, answers=None, passed=None) -> float | None: ...
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "BUILTIN_METRICS",
    "PASS_THRESHOLD",
    "accuracy",
    "accuracy_stderr",
    "compute_metric",
    "maj_at_k",
    "mean_at_k",
    "pass_at_k",
    "pass_at_k_metric",
    "pass_hat_k",
    "pass_hat_k_metric",
]

PASS_THRESHOLD = 1.0 - 1e-9
BUILTIN_METRICS: tuple[str, ...] = ("pass@k", "mean@k", "maj@k", "pass^k", "accuracy")
_NAN = float("nan")

Scores = Sequence[Sequence[float]]
Passed = Sequence[Sequence[bool]]


def _check_counts(n: int, c: int, k: int) -> None:
    """Raise ValueError unless ``k >= 1`` and ``0 <= c <= n``."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if n < 0 or c < 0 or c > n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimator (Chen et al. 2021): ``1 - C(n-c, k) / C(n, k)``.

    ``n`` samples of which ``c`` passed; NaN when ``n < k``; exactly ``c / n`` for ``k = 1``.
    """
    _check_counts(n, c, k)
    if n < k:
        return _NAN
    if k == 1:
        return c / n
    if n - c < k:
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def pass_hat_k(n: int, c: int, k: int) -> float:
    """pass^k (tau-bench): the chance that k samples drawn without replacement all pass, ``C(c, k) / C(n, k)``."""
    _check_counts(n, c, k)
    if n < k:
        return _NAN
    if c < k:
        return 0.0
    product = 1.0
    for i in range(k):
        product *= (c - i) / (n - i)
    return product


def _mean(values: list[float]) -> float:
    kept = [v for v in values if v == v]
    return math.fsum(kept) / len(kept) if kept else _NAN


def _passed(per_task_scores: Scores, passed: Passed | None) -> Passed:
    if passed is not None:
        return passed
    return [[s >= PASS_THRESHOLD for s in scores] for scores in per_task_scores]


def _need_k(k: int | None, name: str) -> int:
    if k is None or k < 1:
        raise ValueError(f"{name} needs k >= 1, as in '{name.replace('k', '4')}'")
    return k


def _mean_estimate(
    estimator: Callable[[int, int, int], float], name: str, per_task_scores: Scores, k: int | None, passed: Passed | None
) -> float:
    """The mean over tasks of ``estimator(samples, passing samples, k)`` (metric ``name`` needs k)."""
    k = _need_k(k, name)
    return _mean([estimator(len(f), sum(f), k) for f in _passed(per_task_scores, passed)])


def pass_at_k_metric(
    per_task_scores: Scores, *, k: int | None = None, answers: Any = None, passed: Passed | None = None
) -> float:
    """Mean unbiased pass@k over the tasks with at least k samples."""
    return _mean_estimate(pass_at_k, "pass@k", per_task_scores, k, passed)


def pass_hat_k_metric(
    per_task_scores: Scores, *, k: int | None = None, answers: Any = None, passed: Passed | None = None
) -> float:
    """Mean pass^k over the tasks with at least k samples."""
    return _mean_estimate(pass_hat_k, "pass^k", per_task_scores, k, passed)


def mean_at_k(
    per_task_scores: Scores, *, k: int | None = None, answers: Any = None, passed: Passed | None = None
) -> float:
    """Mean score of the first k samples, averaged over the tasks with at least k samples."""
    k = _need_k(k, "mean@k")
    return _mean([math.fsum(s[:k]) / k if len(s) >= k else _NAN for s in per_task_scores])


def maj_at_k(
    per_task_scores: Scores,
    *,
    k: int | None = None,
    answers: Sequence[Sequence[str]] | None = None,
    passed: Passed | None = None,
) -> float:
    """Majority vote over the first k samples' normalized answers (ties go to the answer seen first);
    the task scores 1 when the majority answer's first sample passed."""
    k = _need_k(k, "maj@k")
    if answers is None:
        raise ValueError("maj@k needs the samples' answers")
    flags = _passed(per_task_scores, passed)
    values = []
    for task_answers, task_flags in zip(answers, flags, strict=False):
        if len(task_answers) < k:
            values.append(_NAN)
            continue
        counts: dict[str, int] = {}
        first: dict[str, int] = {}
        for index, answer in enumerate(task_answers[:k]):
            counts[answer] = counts.get(answer, 0) + 1
            first.setdefault(answer, index)
        best = max(counts, key=lambda a: (counts[a], -first[a]))
        values.append(1.0 if task_flags[first[best]] else 0.0)
    return _mean(values)


def _per_task_accuracy(per_task_scores: Scores, passed: Passed | None) -> list[float]:
    return [sum(f) / len(f) for f in _passed(per_task_scores, passed) if f]


def accuracy(
    per_task_scores: Scores, *, k: int | None = None, answers: Any = None, passed: Passed | None = None
) -> float:
    """The fraction of samples that pass, averaged per task then over tasks (tasks without samples left out)."""
    return _mean(_per_task_accuracy(per_task_scores, passed))


def accuracy_stderr(
    per_task_scores: Scores, *, k: int | None = None, answers: Any = None, passed: Passed | None = None
) -> float:
    """The standard error of :func:`accuracy`: sample standard deviation of the per-task values / sqrt(N)."""
    values = _per_task_accuracy(per_task_scores, passed)
    if len(values) < 2:
        return _NAN
    mean = math.fsum(values) / len(values)
    variance = math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return math.sqrt(variance / len(values))


_BUILTINS: dict[str, Callable[..., float]] = {
    "pass@k": pass_at_k_metric,
    "mean@k": mean_at_k,
    "maj@k": maj_at_k,
    "pass^k": pass_hat_k_metric,
    "accuracy": accuracy,
    "accuracy_stderr": accuracy_stderr,
}
_FAMILY = re.compile(r"^(?P<prefix>[A-Za-z_][A-Za-z0-9_]*)(?P<sep>[@^])(?P<k>[0-9]+)$")


def resolve_metric(name: str, registry: Any = None) -> tuple[Callable[..., Any], int | None]:
    """The function computing metric ``name`` and its k (``pass@4`` -> pass@k, 4).

    Built-ins resolve without the registry; other names are looked up in ``registry`` (default: the
    installed plugins). An unknown name raises :class:`evsys.schema.errors.UnknownNameError`.
    """
    match = _FAMILY.match(name)
    family, k = (f"{match['prefix']}{match['sep']}k", int(match["k"])) if match else (name, None)
    if family in _BUILTINS:
        if k is not None and k < 1:
            raise ValueError(f"metric '{name}' needs k >= 1")
        return _BUILTINS[family], k
    if registry is None:
        from evsys.schema.plugins import default_registry

        registry = default_registry()
    registration = registry.find("metric", name) or registry.find("metric", family)
    if registration is None:
        registry.get("metric", name)  # raises UnknownNameError listing what is registered
    return registration.load(), k


def compute_metric(
    name: str,
    per_task_scores: Scores,
    per_task_answers: Sequence[Sequence[str]] | None = None,
    *,
    per_task_passed: Passed | None = None,
    registry: Any = None,
) -> float | None:
    """Compute metric ``name`` (``pass@1``, ``maj@4``, ``accuracy``, a plugin's) over per-task scores.

    Returns ``None`` where the value is NaN (e.g. every task has fewer than k samples).
    """
    func, k = resolve_metric(name, registry)
    value = func(per_task_scores, k=k, answers=per_task_answers, passed=per_task_passed)
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value
