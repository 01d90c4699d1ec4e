"""Benchmarks of evsys-verifiers (pytest-benchmark; figures, not pass/fail timings).

Run with ``python -m pytest benchmarks/test_bench_verifiers.py -o addopts="--import-mode=importlib" --benchmark-only``.
Targets: ``contains`` / ``exact_match`` >= 200,000 verifications/s on one core; ``python_tests``
>= 30 trivial programs/s on 2 cores
(plain runner, one bubblewrap per program, pooled bubblewrap, side by side; as root and, run from root, as
an ordinary user); pass@k over 100,000 tasks under 1 s. Each benchmark records its throughput in ``extra_info``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from evsys.schema.rows import TaskRow
from evsys.verifiers.functions import contains, exact_match
from evsys.verifiers.metrics import compute_metric
from evsys.verifiers.scoring import builtin_registry, score_tasks, verify

BATCH = 20_000
rng = random.Random(0)
PAIRS = [(f"The answer is {rng.randint(0, 999)} apples.", str(rng.randint(0, 999))) for _ in range(BATCH)]
SHORT = [(str(rng.randint(0, 99)), str(rng.randint(0, 99))) for _ in range(BATCH)]


def _record(benchmark: Any, items: int, unit: str) -> None:
    mean = benchmark.stats.stats.mean
    benchmark.extra_info[f"{unit}_per_second"] = round(items / mean)


def test_bench_contains(benchmark: Any) -> None:
    def run() -> None:
        for output, expected in PAIRS:
            contains(output, expected)

    benchmark(run)
    _record(benchmark, BATCH, "verifications")


def test_bench_contains_ignore_case(benchmark: Any) -> None:
    def run() -> None:
        for output, expected in PAIRS:
            contains(output, expected, ignore_case=True)

    benchmark(run)
    _record(benchmark, BATCH, "verifications")


def test_bench_exact_match(benchmark: Any) -> None:
    def run() -> None:
        for output, expected in SHORT:
            exact_match(output, expected)

    benchmark(run)
    _record(benchmark, BATCH, "verifications")


def test_bench_verify_through_the_task(benchmark: Any) -> None:
    """The whole path a benchmark takes: task -> kind -> function -> Verification."""
    registry = builtin_registry()
    task = TaskRow.model_validate(
        {
            "task_id": "t",
            "instruction": "q",
            "verifier": {"kind": "in_process", "fn_name": "contains", "expected": "42"},
        }
    )

    def run() -> None:
        for output, _ in PAIRS:
            verify(output, task, registry)

    benchmark(run)
    _record(benchmark, BATCH, "verifications")


PROGRAMS = 60


def _program_tasks(sandbox: str) -> list[TaskRow]:
    tests = "def check(candidate):\n    assert candidate(2) == 4\n"
    verifier = {"fn_name": "python_tests", "sandbox": sandbox, "options": {"tests": tests, "entry_point": "double"}}
    return [
        TaskRow.model_validate({"task_id": f"p{i}", "prompt": "def double(x):\n", "verifier": verifier})
        for i in range(PROGRAMS)
    ]


def _bwrap_problem() -> str | None:
    from evsys.verifiers.sandbox import bwrap_problem

    return bwrap_problem()


def _machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (``/proc/stat``): a runner's CPU includes its sandbox's
    processes, which are not this process's children."""
    with open("/proc/stat") as handle:
        ticks = [int(value) for value in handle.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


RUNNERS = {  # name -> (sandbox setting, EVSYS_VERIFIER_BWRAP)
    "plain": ("none", None),
    "bwrap_per_program": ("bwrap", "per-program"),
    "bwrap_pool": ("bwrap", "pool"),
}


@pytest.mark.parametrize("name", list(RUNNERS))
def test_bench_python_tests_two_workers(benchmark: Any, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Programs per second through ``score_tasks`` with 2 workers: plain runner, one ``bwrap`` per program,
    pooled ``bwrap`` (one sandbox per worker)."""
    sandbox, mode = RUNNERS[name]
    if sandbox == "bwrap" and _bwrap_problem() is not None:
        pytest.skip(f"needs bubblewrap: {_bwrap_problem()}")
    if mode is not None:
        monkeypatch.setenv("EVSYS_VERIFIER_BWRAP", mode)
    registry = builtin_registry()
    tasks = _program_tasks(sandbox)
    answers = [["def double(x):\n    return 2 * x\n"] for _ in tasks]

    def run() -> None:
        result = score_tasks(tasks, answers, ["pass@1"], registry=registry, max_workers=2)
        assert result.metrics["pass@1"] == 1.0

    benchmark.pedantic(run, rounds=3, iterations=1)
    _record(benchmark, PROGRAMS, "programs")


def test_bench_bwrap_against_plain_paired(benchmark: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each runner's throughput as a share of the plain runner's, rounds interleaved (the machine's load
    drifts between separate benchmarks): ``extra_info["bwrap_per_program_share"]`` and
    ``["bwrap_pool_share"]`` (1.0 = no cost), medians of the rounds."""
    if _bwrap_problem() is not None:
        pytest.skip(f"needs bubblewrap: {_bwrap_problem()}")
    import time

    registry = builtin_registry()
    answers = [["def double(x):\n    return 2 * x\n"] for _ in range(PROGRAMS)]
    tasks = {name: _program_tasks(sandbox) for name, (sandbox, _) in RUNNERS.items()}
    seconds: dict[str, list[float]] = {name: [] for name in tasks}
    busy: dict[str, list[float]] = {name: [] for name in tasks}

    def run() -> None:
        for name, batch in tasks.items():
            mode = RUNNERS[name][1]
            if mode is not None:
                monkeypatch.setenv("EVSYS_VERIFIER_BWRAP", mode)
            start, cpu = time.perf_counter(), _machine_busy_seconds()
            result = score_tasks(batch, answers, ["pass@1"], registry=registry, max_workers=2)
            seconds[name].append(time.perf_counter() - start)
            busy[name].append(_machine_busy_seconds() - cpu)
            assert result.metrics["pass@1"] == 1.0

    benchmark.pedantic(run, rounds=7, iterations=1)
    median = {name: sorted(values)[len(values) // 2] for name, values in seconds.items()}
    for name, value in median.items():
        benchmark.extra_info[f"{name}_programs_per_second"] = round(PROGRAMS / value, 1)
        cpu = sorted(busy[name])[len(busy[name]) // 2]
        benchmark.extra_info[f"{name}_machine_cpu_ms_per_program"] = round(cpu / PROGRAMS * 1000, 1)
        if name != "plain":
            benchmark.extra_info[f"{name}_share"] = round(median["plain"] / value, 3)
    ratios = sorted(plain / pool for plain, pool in zip(seconds["plain"], seconds["bwrap_pool"], strict=True))
    benchmark.extra_info["bwrap_pool_share_per_round"] = [round(r, 3) for r in ratios]
    # as root the pool's supervisor and programs run as a fresh uid; an ordinary user's, in a user namespace
    benchmark.extra_info["bwrap_pool_kind"] = "uid per sandbox" if os.geteuid() == 0 else "user namespace per sandbox"


def test_bench_bwrap_against_plain_paired_as_an_ordinary_user(benchmark: Any) -> None:
    """:func:`test_bench_bwrap_against_plain_paired` run from root as uid 65534, every runner as that user
    (the figures ordinary users get): its ``extra_info`` with ``unprivileged_`` in front of each key."""
    from evsys.verifiers.testing import run_unprivileged, shared_directory, unprivileged_problem

    if os.geteuid() != 0:
        pytest.skip("this is an ordinary user: test_bench_bwrap_against_plain_paired measures its sandbox")
    problem = _bwrap_problem() or unprivileged_problem()
    if problem is not None:
        pytest.skip(f"cannot measure as an ordinary user: {problem}")
    with shared_directory() as home:
        shutil.copy(Path(__file__), home)  # a copy that uid can read (this checkout may not be)
        report = os.path.join(home, "paired.json")
        args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "--benchmark-only"]
        args += ["-k", "test_bench_bwrap_against_plain_paired and not ordinary", f"--benchmark-json={report}"]
        args += [f"--basetemp={home}/pytest", Path(__file__).name]

        def run() -> None:
            result = run_unprivileged(args, home=home, timeout=1200)
            assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

        benchmark.pedantic(run, rounds=1, iterations=1)
        with open(report, encoding="utf-8") as handle:
            (measured,) = json.load(handle)["benchmarks"]
    for key, value in measured["extra_info"].items():
        benchmark.extra_info[f"unprivileged_{key}"] = value


@pytest.mark.parametrize("k", [1, 5])
def test_bench_pass_at_k_100k_tasks(benchmark: Any, k: int) -> None:
    scores = [[float(rng.random() < 0.3) for _ in range(10)] for _ in range(100_000)]
    value = benchmark(compute_metric, f"pass@{k}", scores)
    assert value is not None and 0.0 < value < 1.0
    benchmark.extra_info["tasks"] = len(scores)


def test_bench_check_tasks_file_100k_rows(benchmark: Any, tmp_path: Any) -> None:
    """``evsys validate --deep``'s share for a 100,000-task tasks.jsonl (budget: 5 s per 100k rows overall)."""
    import json

    from evsys.verifiers.tasks import check_tasks_file

    path = tmp_path / "tasks.jsonl"
    row = {"instruction": "What is the capital of Germany?", "verifier": {"fn_name": "contains", "expected": "Berlin"}}
    path.write_text("".join(json.dumps({"task_id": f"t{i}", **row}) + "\n" for i in range(100_000)), encoding="utf-8")
    registry = builtin_registry()
    problems = benchmark.pedantic(check_tasks_file, args=(path, registry), rounds=3, iterations=1)
    assert problems == []
