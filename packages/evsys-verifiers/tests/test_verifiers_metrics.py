"""pass@k and the other metrics against hand-computed values."""

from __future__ import annotations

import math
from math import comb

import pytest

from evsys.schema.errors import UnknownNameError
from evsys.schema.plugins import build_registry, hookimpl
from evsys.verifiers import plugin
from evsys.verifiers.metrics import compute_metric, pass_at_k, pass_hat_k


def _reference(n: int, c: int, k: int) -> float:
    return 1.0 - comb(n - c, k) / comb(n, k)


def test_pass_at_1_is_exactly_c_over_n() -> None:
    assert pass_at_k(10, 3, 1) == 0.3
    for n in range(1, 30):
        for c in range(n + 1):
            assert pass_at_k(n, c, 1) == c / n


@pytest.mark.parametrize(
    ("n", "c", "k", "want"),
    [
        (10, 3, 1, 0.3),
        (10, 0, 1, 0.0),
        (10, 0, 5, 0.0),
        (10, 10, 1, 1.0),
        (10, 10, 10, 1.0),
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
        (10, 3, 10, 1.0),
        (5, 1, 2, 0.4),  # 1 - C(4,2)/C(5,2) = 1 - 6/10
        (4, 2, 2, 1 - 1 / 6),
        (10, 8, 3, 1.0),  # n - c < k
        (1, 1, 1, 1.0),
        (1, 0, 1, 0.0),
    ],
)
def test_pass_at_k_hand_computed(n: int, c: int, k: int, want: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(want, abs=1e-12)


def test_pass_at_k_matches_the_combinatorial_formula() -> None:
    for n in range(1, 25):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(_reference(n, c, k), abs=1e-12)


def test_n_below_k_is_nan_and_left_out_of_the_mean() -> None:
    assert math.isnan(pass_at_k(3, 1, 5))
    scores = [[1.0] * 2 + [0.0] * 8, [1.0, 0.0, 0.0]]  # the second task has n=3 < k=5
    assert compute_metric("pass@5", scores) == pytest.approx(_reference(10, 2, 5))
    assert compute_metric("pass@11", scores) is None
    assert compute_metric("pass@1", scores) == pytest.approx((0.2 + 1 / 3) / 2)


@pytest.mark.parametrize(("n", "c", "k"), [(0, 0, 0), (5, 6, 1), (-1, 0, 1), (5, -1, 1)])
def test_pass_at_k_rejects_nonsense(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_pass_hat_k() -> None:
    assert pass_hat_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_hat_k(10, 3, 2) == pytest.approx(comb(3, 2) / comb(10, 2))
    assert pass_hat_k(10, 10, 4) == 1.0
    assert pass_hat_k(10, 2, 3) == 0.0
    assert math.isnan(pass_hat_k(2, 2, 3))
    assert compute_metric("pass^2", [[1, 1, 0], [1, 1]]) == pytest.approx((1 / 3 + 1) / 2)


def test_mean_at_k() -> None:
    assert compute_metric("mean@2", [[1.0, 0.5, 0.0], [0.0, 0.0]]) == pytest.approx(0.375)
    assert compute_metric("mean@3", [[1.0, 0.5, 0.0], [0.0]]) == pytest.approx(0.5)
    assert compute_metric("mean@4", [[1.0]]) is None


def test_maj_at_k_majority_and_ties_to_first_seen() -> None:
    scores = [[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 1.0, 0.0]]
    answers = [["5", "7", "7", "5"], ["3", "4", "4", "4"], ["1", "2", "1", "2"]]
    # task 0: 5 and 7 tie 2-2, 5 seen first -> wrong; task 1: 4 wins -> wrong; task 2: tie, 1 first -> right
    assert compute_metric("maj@4", scores, answers) == pytest.approx(1 / 3)
    # over the first 3 samples: task 0 -> 7 (right), task 1 -> 4 (wrong), task 2 -> 1 (right)
    assert compute_metric("maj@3", scores, answers) == pytest.approx(2 / 3)
    assert compute_metric("maj@5", scores, answers) is None
    with pytest.raises(ValueError, match="answers"):
        compute_metric("maj@1", scores)


def test_accuracy_and_stderr() -> None:
    from evsys.verifiers.metrics import accuracy_stderr

    scores = [[1.0], [0.0], [1.0], [1.0]]
    assert compute_metric("accuracy", scores) == 0.75
    assert accuracy_stderr(scores) == pytest.approx(math.sqrt(0.25 / 4))
    assert compute_metric("accuracy", [[0.99]]) == 0.0  # partial credit is not a pass
    assert compute_metric("accuracy", [[0.5]], per_task_passed=[[True]]) == 1.0
    assert compute_metric("accuracy", []) is None


def test_unknown_metric_names_the_registered_ones() -> None:
    registry = build_registry([("evsys-verifiers", plugin)], autoload=False)
    with pytest.raises(UnknownNameError, match="pass@k"):
        compute_metric("pass_at_1", [[1.0]], registry=registry)


class _MetricPlugin:
    @staticmethod
    @hookimpl
    def evsys_register(register):  # type: ignore[no-untyped-def]
        register.metric("best@k", f"{__name__}:best_at_k")


def best_at_k(per_task_scores, *, k=None, answers=None, passed=None):  # type: ignore[no-untyped-def]
    return sum(max(s[:k]) for s in per_task_scores) / len(per_task_scores)


def test_metric_plugins() -> None:
    registry = build_registry([("evsys-verifiers", plugin), ("my-metrics", _MetricPlugin)], autoload=False)
    assert compute_metric("best@2", [[0.2, 0.7, 0.9], [0.1, 0.3]], registry=registry) == pytest.approx(0.5)
