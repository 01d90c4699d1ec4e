"""Benchmark: ``evsys validate --deep`` over a 1,000,000-row parquet read with ``source_kind: hf``
(target: under 10 s on 2 cores, the whole command as a user runs it).

Run with ``python -m pytest benchmarks/test_bench_validate_hf.py -o addopts="--import-mode=importlib" --benchmark-only``
(the root pyproject skips benchmarks by default). The parquet is written with pyarrow; the first
round (warm-up) also fills the Hugging Face datasets cache (under the test's own ``HF_HOME``), as a
user's first validate does. The second case puts one bad row last: the batch holding it is checked
row by row and the problem is named ``file[split]:row N: column: message``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROWS = 1_000_000
LIMIT_S = 10.0


def _write(directory: Path, bad_last: bool) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    questions = pa.array([f"What is {i} + 1?" for i in range(ROWS)])
    answers = [str(i + 1) for i in range(ROWS)]
    if bad_last:
        answers[-1] = None  # type: ignore[call-overload]
    pq.write_table(pa.table({"q": questions, "a": pa.array(answers), "source": pa.array(["synthetic"] * ROWS)}), directory / "train.parquet")
    (directory / "config.yaml").write_text(
        "model: {name: Qwen/Qwen3.5-4B}\n"
        "backend: {kind: tinker}\n"
        "algorithm:\n"
        "  kind: sdft\n"
        "  params: {learning_rate: 1.0e-4, max_steps: 2, topk: 20, user_template: '{question}'}\n"
        "data: {source_kind: hf, path: train.parquet, columns: {question: q, expected: a}}\n",
        encoding="utf-8",
    )


@pytest.fixture(scope="module", params=["valid", "bad_last_row"])
def parquet_config(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bool]:
    directory = tmp_path_factory.mktemp(f"bench_hf_{request.param}")
    bad = request.param == "bad_last_row"
    _write(directory, bad)
    return directory, bad


def test_validate_deep_1m_parquet_rows(benchmark, parquet_config: tuple[Path, bool]) -> None:  # type: ignore[no-untyped-def]
    directory, bad = parquet_config
    evsys = Path(sys.executable).with_name("evsys")
    command = [str(evsys)] if evsys.exists() else [sys.executable, "-m", "evsys.cli.main"]
    env = {**os.environ, "TINKER_API_KEY": "bench-key", "HF_HOME": str(directory / "hf_home"), "HF_HUB_OFFLINE": "1"}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, "validate", "config.yaml", "--deep"], cwd=directory, capture_output=True, text=True, env=env, check=False
        )

    done = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    if bad:
        assert done.returncode == 1
        assert f"train.parquet[train]:row {ROWS}: a: empty value (null)" in done.stderr, done.stderr
    else:
        assert done.returncode == 0, done.stderr
        assert f"deep: {ROWS} examples" in done.stdout
    assert benchmark.stats.stats.median < LIMIT_S  # the median of 3 rounds: a shared machine adds noise
