"""Shared fixtures for the cross-package and end-to-end tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (configs' relative paths are resolved against it)."""
    return REPO_ROOT


@pytest.fixture(scope="session", autouse=True)
def _shared_model_cache() -> None:
    """Keep the converted bundled model in one cache for the whole session (and between sessions)."""
    os.environ.setdefault("EVSYS_CACHE_DIR", str(REPO_ROOT / ".evsys-cache"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama and byte-level tokenizer on disk (built offline, for fast real runs)."""
    from evsys.backends.local.testing import build_tiny_model_dir

    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))


TINY_TRAIN_ROWS = (
    {"inputs": {"question": "What is the capital of France?"}, "expected": "Paris"},
    {"inputs": {"question": "What is the capital of Japan?"}, "expected": "Tokyo"},
    {"inputs": {"question": "What is the capital of Italy?"}, "expected": "Rome"},
)
TINY_TASKS = (
    {"task_id": "v0", "instruction": "Capital of Germany?", "verifier": {"kind": "in_process", "fn_name": "contains", "expected": "Berlin"}},
    {"task_id": "v1", "instruction": "Capital of Spain?", "verifier": {"kind": "in_process", "fn_name": "contains", "expected": "Madrid"}},
)


def write_tiny_run(
    directory: Path,
    model_dir: Path,
    *,
    params: dict | None = None,
    tasks: tuple[dict, ...] | list[dict] = TINY_TASKS,
    train_rows: tuple[dict, ...] | list[dict] = TINY_TRAIN_ROWS,
    benchmark: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a tiny SDFT run (config.yaml, data, benchmark) under ``directory``; returns the config path.

    Defaults: 8 steps, a checkpoint every 2, a 2-task benchmark every 3 steps; outputs in
    ``directory/outputs/tiny``. ``params``, ``benchmark`` and ``extra`` (top-level keys) override.
    """
    import json

    import yaml

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "val").mkdir(exist_ok=True)
    (directory / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train_rows), encoding="utf-8")
    (directory / "val" / "tasks.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tasks), encoding="utf-8")
    algorithm = {
        "learning_rate": 0.01, "max_steps": 8, "batch_size": 1, "lora_rank": 2, "topk": 4,
        "user_template": "{question}", "save_every": 2, "max_new_tokens": 6, "seed": 3,
    }
    algorithm.update(params or {})
    bench = {"name": "val", "path": str(directory / "val"), "run_every": 3, "max_new_tokens": 4, "metrics": ["pass@1"]}
    bench.update(benchmark or {})
    config = {
        "name": "tiny",
        "output_dir": str(directory / "outputs"),
        "model": {"name": str(model_dir)},
        "backend": {"kind": "local", "params": {"device": "cpu"}},
        "algorithm": {"kind": "sdft", "params": algorithm},
        "data": {"source_kind": "jsonl", "path": str(directory / "train.jsonl")},
        "metadata": {"benchmark": [bench]},
        "callbacks": [{"kind": "local_logger"}],
    }
    config.update(extra or {})
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_run() -> object:
    """:func:`write_tiny_run`, for tests that need a real (tiny) training run."""
    return write_tiny_run
