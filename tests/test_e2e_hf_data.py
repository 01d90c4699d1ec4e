"""Data through Hugging Face ``datasets`` end to end: a parquet with columns ``q`` and ``a`` trains
SDFT locally (tiny random model), the same data from ``save_to_disk`` and csv gives the same
examples, a benchmark is scored from a dataset plus one verifier, and ``evsys validate --deep``
names bad dataset rows ``file[split]:row N: column: message`` and data an algorithm cannot use in one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

datasets = pytest.importorskip("datasets")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

ROWS = [
    {"q": "What is the capital of France?", "a": "Paris", "topic": "geo"},
    {"q": "What is the capital of Japan?", "a": "Tokyo", "topic": "geo"},
    {"q": "What is the capital of Italy?", "a": "Rome", "topic": "geo"},
]
COLUMNS = {"question": "q", "expected": "a"}


def write_data(directory: Path) -> None:
    """The same rows as parquet, csv and a save_to_disk directory."""
    pq.write_table(pa.Table.from_pylist(ROWS), directory / "train.parquet")
    (directory / "train.csv").write_text("q,a,topic\n" + "".join(f"{r['q']},{r['a']},{r['topic']}\n" for r in ROWS), encoding="utf-8")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(directory / "saved"))


def config_for(directory: Path, model_dir: Path, data: dict, *, benchmark: list | None = None, algorithm: str = "sdft") -> Path:
    params = {"learning_rate": 0.01, "max_steps": 2, "batch_size": 1, "lora_rank": 2, "seed": 3}
    if algorithm == "sdft":
        params.update(topk=4, max_new_tokens=4)
    config = {
        "name": "hf",
        "output_dir": str(directory / "outputs"),
        "model": {"name": str(model_dir)},
        "backend": {"kind": "local", "params": {"device": "cpu"}},
        "algorithm": {"kind": algorithm, "params": params},
        "data": data,
        "metadata": {"benchmark": benchmark or []},
    }
    path = directory / f"config-{len(list(directory.glob('config-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def hf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """datasets' cache under tmp_path (in-process and in CLI subprocesses); never the network."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_home" / "datasets"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def evsys(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "evsys.cli.main", *args], cwd=cwd, capture_output=True, text=True, env=os.environ.copy(), timeout=300, check=False
    )


def test_parquet_q_a_trains_two_sdft_steps_and_scores_a_dataset_benchmark(tmp_path: Path, tiny_model_dir: Path) -> None:
    from evsys.cli import run

    write_data(tmp_path)
    benchmark = {
        "name": "capitals",
        "data": {"source_kind": "hf", "path": str(tmp_path / "train.parquet"), "columns": {"question": "q", "expected": "a"}},
        "verifier": {"fn_name": "contains"},
        "run_every": 1,
        "max_new_tokens": 3,
    }
    config = config_for(tmp_path, tiny_model_dir, {"source_kind": "hf", "path": str(tmp_path / "train.parquet"), "columns": COLUMNS}, benchmark=[benchmark])
    checked = evsys("validate", str(config), "--deep", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "deep: 3 examples, 1 benchmark with 3 tasks" in checked.stdout, checked.stdout
    result = run(config)
    assert result.status == "completed"
    rows = [json.loads(line) for line in (tmp_path / "outputs" / "hf" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in rows] == [(1, "train"), (1, "val"), (2, "train"), (2, "val")]
    predictions = [json.loads(line) for line in (tmp_path / "outputs" / "hf" / "predictions" / "capitals.jsonl").read_text().splitlines()]
    assert {p["task_id"] for p in predictions} == {"row_1", "row_2", "row_3"}
    assert {p["expected"] for p in predictions} == {"Paris", "Tokyo", "Rome"}


def test_parquet_save_to_disk_and_csv_give_the_same_examples(tmp_path: Path, tiny_model_dir: Path) -> None:
    from evsys.engine.run_setup import load_training_examples
    from evsys.schema.plugins import default_registry
    from evsys.schema.validation import load_config

    write_data(tmp_path)
    registry = default_registry()
    loaded = {}
    for name in ("train.parquet", "saved", "train.csv"):
        config = config_for(tmp_path, tiny_model_dir, {"source_kind": "hf", "path": str(tmp_path / name), "columns": COLUMNS})
        loaded[name] = [e.model_dump() for e in load_training_examples(load_config(config, registry), registry)]
    assert loaded["train.parquet"] == [{"inputs": {"question": r["q"]}, "expected": r["a"], "id": None, "metadata": {}} for r in ROWS]
    assert loaded["saved"] == loaded["train.parquet"] == loaded["train.csv"]


def test_validate_deep_names_dataset_row_and_column(tmp_path: Path, tiny_model_dir: Path) -> None:
    pq.write_table(pa.table({"q": ["ok?", None, "fine?"], "a": ["yes", "no", "z"]}), tmp_path / "bad.parquet")
    config = config_for(tmp_path, tiny_model_dir, {"source_kind": "hf", "path": "bad.parquet", "columns": COLUMNS})
    done = evsys("validate", str(config), "--deep", cwd=tmp_path)
    assert done.returncode == 1
    assert "bad.parquet[train]:row 2: q: empty value (null)" in done.stderr.splitlines()
    assert "Traceback" not in done.stderr


def test_chat_conversations_for_sdft_are_one_line_naming_sft(tmp_path: Path, tiny_model_dir: Path) -> None:
    chat = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    (tmp_path / "chat.jsonl").write_text((json.dumps(chat) + "\n") * 120, encoding="utf-8")
    config = config_for(tmp_path, tiny_model_dir, {"path": "chat.jsonl"})
    done = evsys("validate", str(config), "--deep", cwd=tmp_path)
    assert done.returncode == 1
    problems = [line for line in done.stderr.splitlines() if not line.startswith("FAILED")]
    assert problems == [
        'chat.jsonl: 120 rows are conversations to train on {"messages": [..., assistant turns]} without "expected", '
        'which only sft takes; sdft takes {"inputs": {...}, "expected": ...} or {"messages": [system/user turns], "expected": ...} '
        "(first at chat.jsonl:1)"
    ]


def test_chat_prompts_with_expected_validate_for_sdft_and_grpo(tmp_path: Path, tiny_model_dir: Path) -> None:
    row = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}], "expected": "Paris"}
    (tmp_path / "chat.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    for algorithm in ("sdft", "grpo", "sft"):
        config = config_for(tmp_path, tiny_model_dir, {"path": "chat.jsonl"}, algorithm=algorithm)
        done = evsys("validate", str(config), "--deep", cwd=tmp_path)
        assert done.returncode == 0, (algorithm, done.stderr)
        assert "deep: 1 example" in done.stdout, (algorithm, done.stdout)


def test_hub_id_not_cached_is_one_line_and_validate_never_downloads(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = config_for(tmp_path, tiny_model_dir, {"source_kind": "hf", "path": "someone/not-cached", "columns": COLUMNS})
    done = evsys("validate", str(config), "--deep", cwd=tmp_path)
    lines = [line for line in done.stderr.splitlines() if not line.startswith("FAILED")]
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith(
        "someone/not-cached: Hub dataset 'someone/not-cached' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set"
    ), done.stderr
    monkeypatch.delenv("HF_HUB_OFFLINE")
    started = time.monotonic()
    done = evsys("validate", str(config), "--deep", cwd=tmp_path)
    assert time.monotonic() - started < 60  # no download attempts and retries
    assert "is not in the local Hugging Face cache and validate --deep never downloads" in done.stderr, done.stderr


def test_a_missing_local_data_file_points_at_the_config_line(tmp_path: Path, tiny_model_dir: Path) -> None:
    (tmp_path / "sub").mkdir()
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "sub" / "train.parquet")
    config = config_for(tmp_path / "sub", tiny_model_dir, {"source_kind": "hf", "path": "train.parquet", "columns": COLUMNS})
    done = evsys("validate", f"sub/{config.name}", "--deep", cwd=tmp_path)
    assert done.returncode == 1
    assert f"sub/{config.name}:21:3: data.path: file not found: train.parquet (paths are relative to the working directory, {tmp_path}); did you mean 'sub/train.parquet'?" in done.stderr, done.stderr
