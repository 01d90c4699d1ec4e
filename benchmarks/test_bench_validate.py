"""Benchmark: ``evsys validate --deep`` over a 100,000-row train.jsonl (target: under 5 s on 2 cores).

Run with ``python -m pytest benchmarks/test_bench_validate.py -o addopts="--import-mode=importlib" --benchmark-only``
(the root pyproject skips benchmarks by default). It measures the
whole command as a user runs it (a fresh interpreter: imports, plugin loading, YAML, every row
validated against the algorithm's row model and templates, the benchmark's tasks.jsonl).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROWS = 100_000
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def big_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("bench")
    with (directory / "train.jsonl").open("w", encoding="utf-8") as handle:
        for index in range(ROWS):
            row = {
                "inputs": {"question": f"What is the capital of country number {index}?"},
                "expected": f"City {index}",
            }
            handle.write(json.dumps(row) + "\n")
    (directory / "val").mkdir()
    tasks = (ROOT / "examples" / "sdft_walkthrough" / "data" / "val" / "tasks.jsonl").read_text(encoding="utf-8")
    (directory / "val" / "tasks.jsonl").write_text(tasks, encoding="utf-8")
    (directory / "config.yaml").write_text(
        "model: {name: Qwen/Qwen3.5-4B}\n"
        "backend: {kind: tinker}\n"
        "algorithm:\n"
        "  kind: sdft\n"
        "  params: {learning_rate: 1.0e-4, max_steps: 2, topk: 20, user_template: '{question}'}\n"
        "data: {source_kind: jsonl, path: train.jsonl}\n"
        "metadata:\n"
        "  benchmark: [{name: val, path: val, run_every: 1, metrics: [pass@1], split: val}]\n",
        encoding="utf-8",
    )
    return directory


def test_validate_deep_100k_rows(benchmark, big_config: Path) -> None:  # type: ignore[no-untyped-def]
    evsys = Path(sys.executable).with_name("evsys")
    command = [str(evsys)] if evsys.exists() else [sys.executable, "-m", "evsys.cli.main"]
    env = {**os.environ, "TINKER_API_KEY": "bench-key"}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, "validate", "config.yaml", "--deep"],
            cwd=big_config,
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )

    done = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    assert done.returncode == 0, done.stderr
    assert f"deep: {ROWS} examples" in done.stdout


def test_check_examples_in_process_100k_rows(benchmark, big_config: Path) -> None:  # type: ignore[no-untyped-def]
    """The row loop alone (no interpreter start-up), to see where the time goes."""
    from evsys.data.examples import check_examples_file
    from evsys.schema.plugins import default_registry
    from evsys.schema.rows import PromptExample

    registry = default_registry()
    valid, problems = benchmark.pedantic(
        check_examples_file,
        args=(big_config / "train.jsonl", (PromptExample,)),
        kwargs={"templates": {"{question}": frozenset()}, "registry": registry},
        rounds=3,
        iterations=1,
    )
    assert (valid, problems) == (ROWS, [])
