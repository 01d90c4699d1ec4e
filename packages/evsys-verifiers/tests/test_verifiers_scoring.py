"""verify() over every kind, and score_tasks()."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import pytest

from evsys.schema.plugins import build_registry, hookimpl
from evsys.schema.rows import PredictionRow, TaskRow
from evsys.verifiers import plugin
from evsys.verifiers.scoring import BenchmarkScore, Verification, score_benchmark, score_tasks, verify


def _task(task_id: str = "t", **verifier: Any) -> TaskRow:
    row: dict[str, Any] = {"task_id": task_id, "instruction": "q"}
    if verifier:
        row["verifier"] = verifier
    else:
        row["answer"] = "42"
    return TaskRow.model_validate(row)


@pytest.fixture
def registry() -> Any:
    return build_registry([("evsys-verifiers", plugin)], autoload=False)


def starts_with(output: str, expected: Any, *, ignore_case: bool = False) -> float:
    """A python-kind verifier used by the tests."""
    if ignore_case:
        return float(output.lower().startswith(str(expected).lower()))
    return float(output.startswith(str(expected)))


def explodes(output: str, expected: Any) -> float:
    raise RuntimeError("boom")


def out_of_range(output: str, expected: Any) -> float:
    return 1.5


def test_in_process_and_the_default_function(registry: Any) -> None:
    seed = _task(kind="in_process", fn_name="contains", expected="Berlin")
    assert verify("It is Berlin.", seed, registry) == Verification(1.0, True)
    assert verify("Paris", seed, registry) == Verification(0.0, False)
    assert verify("42", _task(), registry).passed  # no verifier: exact_match against answer
    assert not verify("42!", _task(), registry).passed


def test_threshold_and_extracted(registry: Any) -> None:
    task = _task(fn_name="token_f1", expected="big red dog", options={"threshold": 0.5, "extract": "answer_tag"})
    result = verify("<answer>red dog</answer>", task, registry)
    assert result.score == pytest.approx(0.8) and result.passed and result.extracted == "red dog"
    assert not verify("<answer>cat</answer>", task, registry).passed


def test_python_kind(registry: Any) -> None:
    task = _task(kind="python", fn_name=f"{__name__}:starts_with", expected="yes", options={"ignore_case": True})
    assert verify("Yes, indeed", task, registry).score == 1.0


def test_a_verifier_that_raises_scores_zero_with_the_error(registry: Any) -> None:
    result = verify("x", _task(kind="python", fn_name=f"{__name__}:explodes"), registry)
    assert result == Verification(0.0, False, "RuntimeError: boom")
    result = verify("x", _task(kind="python", fn_name=f"{__name__}:out_of_range"), registry)
    assert result.score == 0.0 and "outside [0, 1]" in (result.error or "")
    result = verify("x", _task(kind="python", fn_name="no_such_module_evsys:f"), registry)
    assert "No module named" in (result.error or "")
    result = verify("x", _task(fn_name="nope", expected="x"), registry)
    assert "unknown verifier function 'nope'" in (result.error or "")
    result = verify("x", _task(kind="nope", expected="x"), registry)
    assert "unknown verifier 'nope'" in (result.error or "")


def test_subprocess_kind(registry: Any) -> None:
    checker = (
        "import json, os\n"
        "out = open(os.environ['EVSYS_OUTPUT_FILE']).read()\n"
        "exp = json.load(open('expected.json'))\n"
        "print('checking')\n"
        "print(1.0 if out.strip() == exp else 0.25)\n"
    )
    task = _task(
        kind="subprocess", command=["{python}", "check.py"], expected="ok", options={"files": {"check.py": checker}}
    )
    assert verify("ok", task, registry).score == 1.0
    assert verify("nope", task, registry).score == 0.25
    exit_code = _task(kind="subprocess", command=f"{sys.executable} -c 'import sys; sys.exit(3)'")
    assert verify("x", exit_code, registry) == Verification(0.0, False)
    hang = _task(kind="subprocess", command=[sys.executable, "-c", "while True: pass"], timeout=0.5)
    assert verify("x", hang, registry).score == 0.0


class _KindPlugin:
    @staticmethod
    @hookimpl
    def evsys_register_verifiers(registry):  # type: ignore[no-untyped-def]
        registry.register("length_at_most", f"{__name__}:build_length")
        registry.register_function("starts_with", f"{__name__}:starts_with")


def build_length(spec: Any, registry: Any) -> Any:
    limit = int(spec.options.get("limit", 5))
    return lambda output, expected: len(output) <= limit


def test_plugin_kinds_and_functions() -> None:
    registry = build_registry([("evsys-verifiers", plugin), ("my-verifiers", _KindPlugin)], autoload=False)
    assert verify("abc", _task(kind="length_at_most", options={"limit": 3}), registry).passed
    assert not verify("abcd", _task(kind="length_at_most", options={"limit": 3}), registry).passed
    assert verify("yes sir", _task(fn_name="starts_with", expected="yes"), registry).passed


def test_score_tasks_predictions_and_metrics(registry: Any) -> None:
    tasks = [
        _task("a", fn_name="contains", expected="Berlin"),
        _task("b", fn_name="numeric_match", expected=12),
        _task("c", kind="python", fn_name=f"{__name__}:explodes"),
    ]
    answers = [["Berlin", "Paris", "Berlin"], ["It is 12.", "13", "12.0"], ["x", "y", "z"]]
    result = score_tasks(
        tasks, answers, ["pass@1", "pass@2", "maj@3", "mean@3", "accuracy", "pass^3"], registry=registry, step=4
    )
    assert isinstance(result, BenchmarkScore)
    assert result.metrics["pass@1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert result.metrics["maj@3"] == pytest.approx(2 / 3)  # a: Berlin; b: 12 (12 and 12.0 agree); c: fails
    assert result.metrics["pass^3"] == 0.0
    assert result.metrics["accuracy_stderr"] is not None
    assert len(result.predictions) == 9 and result.errors == 3
    for row in result.predictions:
        PredictionRow.model_validate(row)
    first = result.predictions[0]
    assert first == {
        "task_id": "a",
        "prompt": "q",
        "answer": "Berlin",
        "score": 1.0,
        "passed": True,
        "step": 4,
        "sample_index": 0,
        "expected": "Berlin",
        "error": None,
    }
    assert result.predictions[-1]["error"] == "RuntimeError: boom"
    assert result.scores[1] == [1.0, 0.0, 1.0]


def test_thinking_outputs_are_scored_on_their_final_answer(registry: Any) -> None:
    task = _task("t", fn_name="contains", expected="Paris")
    assert verify("<think>\nFrance... Paris? no, Lyon.\n</think>\n\nLyon", task, registry).score == 0.0
    assert verify("<think>\nLyon or Paris\n</think>\n\nParis.", task, registry).score == 1.0
    assert verify("<think>\nParis, surely, but let me", task, registry).score == 0.0  # never finished thinking
    result = score_tasks([task], [["<think>\nhmm Lyon\n</think>\n\nParis.", "Paris"]], ["pass@1", "maj@2"], registry=registry)
    thinking, plain = result.predictions
    assert thinking["answer"] == "Paris." and thinking["output"] == "<think>\nhmm Lyon\n</think>\n\nParis."
    assert "output" not in plain and plain["answer"] == "Paris"
    assert result.metrics == {"pass@1": 1.0, "maj@2": 1.0}
    for row in result.predictions:
        PredictionRow.model_validate(row)


def test_score_tasks_nan_is_none_and_bad_input(registry: Any) -> None:
    tasks = [_task("a", fn_name="contains", expected="x")]
    assert score_tasks(tasks, [["x"]], ["pass@2"], registry=registry).metrics == {"pass@2": None}
    with pytest.raises(ValueError, match="answers for 0"):
        score_tasks(tasks, [], ["pass@1"], registry=registry)
    from evsys.schema.errors import UnknownNameError

    with pytest.raises(UnknownNameError):
        score_tasks(tasks, [["x"]], ["pass_at_1"], registry=registry)


def test_subprocess_verifiers_run_concurrently_on_threads(registry: Any) -> None:
    tests = "def check(f):\n    assert f(2) == 4\n"
    tasks = [
        _task(f"p{i}", fn_name="python_tests", options={"tests": tests, "entry_point": "double"}) for i in range(6)
    ]
    good = "def double(x):\n    return 2 * x"
    answers = [[good, "def double(x):\n    return x"] for _ in tasks]
    result = score_tasks(
        tasks, answers, ["pass@1", "pass@2"], registry=registry, max_workers=2, prompts=[f"P{i}" for i in range(6)]
    )
    assert result.metrics == {"pass@1": 0.5, "pass@2": 1.0}
    assert [row["prompt"] for row in result.predictions[:2]] == ["P0", "P0"]


_THREADS: list[str] = []


def build_sleepy(spec: Any, registry: Any) -> Any:
    def verifier(output: str, expected: Any) -> float:
        _THREADS.append(threading.current_thread().name)
        time.sleep(0.3)
        return 1.0

    return verifier


class _SleepyPlugin:
    @staticmethod
    @hookimpl
    def evsys_register_verifiers(registry):  # type: ignore[no-untyped-def]
        registry.register("sleepy", f"{__name__}:build_sleepy")


def test_plugin_kinds_run_on_a_thread_pool() -> None:
    registry = build_registry([("evsys-verifiers", plugin), ("sleepy", _SleepyPlugin)], autoload=False)
    tasks = [_task(f"s{i}", kind="sleepy") for i in range(4)]
    start = time.monotonic()
    result = score_tasks(tasks, [["a"]] * 4, ["pass@1"], registry=registry, max_workers=4)
    assert time.monotonic() - start < 1.0  # 4 x 0.3 s in parallel
    assert result.metrics["pass@1"] == 1.0
    assert len(_THREADS) == 4 and all(name.startswith("evsys-verify") for name in _THREADS)


def test_score_benchmark_calls_generate(registry: Any) -> None:
    tasks = [_task("a", fn_name="contains", expected="x"), _task("b", fn_name="contains", expected="y")]

    def generate(batch: list[TaskRow], n: int) -> list[list[str]]:
        return [[t.resolved_expected] * n for t in batch]

    result = score_benchmark(tasks, generate, ["pass@4"], n=4, registry=registry)
    assert result.metrics == {"pass@4": 1.0} and len(result.predictions) == 8


def test_verify_without_a_registry_uses_the_builtins(monkeypatch: pytest.MonkeyPatch) -> None:
    from evsys.schema import plugins

    monkeypatch.setenv("EVSYS_DISABLE_PLUGIN_AUTOLOAD", "1")
    plugins.reset_default_registry()
    try:
        assert verify("Berlin", _task(fn_name="contains", expected="Berlin")).passed
    finally:
        plugins.reset_default_registry()
