"""Environment faults and secrets on a tiny real model.

- an output directory that cannot be created (a path under a regular file; under /proc) fails before
  the model loads — we run as root, so chmod cannot make a directory unwritable;
- a full output file system (simulated with RLIMIT_FSIZE in a subprocess) fails with one line naming
  the file, and every row written before stays whole;
- training data is loaded up front: a missing file fails before the model loads, and deleting it
  mid-run changes nothing;
- a benchmark verifier that hangs is killed at its timeout and scored 0 with the error recorded;
- secret values (TINKER_API_KEY, HF_TOKEN, credential-named and config-referenced variables) appear
  in no output file, even when the data, the tasks and the config notes contain them.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from evsys.cli.main import main
from evsys.engine.api import run
from evsys.schema.protocols import BaseCallback

SECRETS = {
    "TINKER_API_KEY": "tk-live-0123456789abcdef",
    "HF_TOKEN": "hf_SeCrEtToKeN987654321",
    "EVSYS_TEST_DB_PASSWORD": "pw-hunter2-hunter2",
    "EVSYS_TEST_REFERENCED": "referenced-value-42x",
}


def rows_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def evsys_command() -> list[str]:
    script = Path(sys.executable).with_name("evsys")
    return [str(script)] if script.exists() else [sys.executable, "-m", "evsys.cli.main"]


def test_an_output_dir_under_a_regular_file_fails_before_training(
    tmp_path: Path, tiny_model_dir: Path, tiny_run: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    config = tiny_run(tmp_path, tiny_model_dir, extra={"output_dir": str(blocker / "outputs")})
    assert main(["run", str(config), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [f"{blocker / 'outputs' / 'tiny'}: cannot create the run directory: Not a directory (a part of the path is a file)"]

    config = tiny_run(tmp_path, tiny_model_dir, extra={"output_dir": "/proc/evsys-outputs"})
    assert main(["run", str(config), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("/proc/evsys-outputs") and "cannot create the run directory" in err and "Traceback" not in err


def test_a_full_output_file_system_fails_with_one_line_and_keeps_every_row(
    tmp_path: Path, tiny_model_dir: Path, tiny_run: Callable[..., Path]
) -> None:
    limit = 3000  # bytes per file: resolved_config.json fits, the 6th metrics row does not (checkpoints only at the end)
    config = tiny_run(tmp_path, tiny_model_dir, params={"save_every": None, "max_steps": 8}, benchmark={"run_every": None})
    run_dir = tmp_path / "outputs" / "tiny"

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run(
        [*evsys_command(), "run", str(config), "-q"], capture_output=True, text=True, timeout=300, preexec_fn=limit_file_size
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"{run_dir / 'metrics.jsonl'}: File too large; rows up to step ")
    rows = rows_of(run_dir / "metrics.jsonl")  # the row that did not fit was rolled back: every line whole
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1)) and 3 < len(rows) < 8
    assert (run_dir / "metrics.jsonl").stat().st_size <= limit
    summary = (run_dir / "summary.md").read_text()
    assert "Status: failed" in summary and "File too large" in summary


def test_missing_training_data_is_found_before_the_model_loads(
    tmp_path: Path, tiny_model_dir: Path, tiny_run: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_run(tmp_path, tiny_model_dir)
    (tmp_path / "train.jsonl").unlink()
    assert main(["run", str(config), "-q"]) == 1
    assert capsys.readouterr().err == f"{tmp_path / 'train.jsonl'}: file not found\n"
    assert not (tmp_path / "outputs").exists()


class DeleteDataAfterFirstStep(BaseCallback):
    """Removes the training data file once training is under way."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
        self.path.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_run: Callable[..., Path]) -> dict[str, Any]:
    """A run with secrets in the environment and in its inputs, a hanging verifier, and its data deleted mid-run."""
    directory = tmp_path_factory.mktemp("hostile")
    tasks = [
        {"task_id": "v0", "instruction": f"Repeat {SECRETS['EVSYS_TEST_REFERENCED']}", "verifier": {"kind": "in_process", "fn_name": "contains", "expected": SECRETS["HF_TOKEN"]}},
        {"task_id": "hang", "instruction": "Anything", "verifier": {"kind": "subprocess", "command": [sys.executable, "-c", "import time; time.sleep(60)"], "timeout": 0.5}},
        {"task_id": "v2", "instruction": f"Use {SECRETS['TINKER_API_KEY']}", "answer": SECRETS["EVSYS_TEST_DB_PASSWORD"]},
    ]
    train = [{"inputs": {"question": f"The key is {SECRETS['TINKER_API_KEY']}?"}, "expected": SECRETS["HF_TOKEN"]}]
    config = tiny_run(
        directory,
        tiny_model_dir,
        params={"max_steps": 2, "save_every": 1},
        tasks=tasks,
        train_rows=train,
        benchmark={"run_every": None},
        extra={"metadata": {"notes": f"token ${{EVSYS_TEST_REFERENCED}}, pw {SECRETS['EVSYS_TEST_DB_PASSWORD']}", "benchmark": [
            {"name": "val", "path": str(directory / "val"), "max_new_tokens": 4, "metrics": ["pass@1"]}
        ]}},
    )
    with pytest.MonkeyPatch.context() as patch:
        for name, value in SECRETS.items():
            patch.setenv(name, value)
        result = run(config, callbacks=[DeleteDataAfterFirstStep(directory / "train.jsonl")])
    return {"result": result, "run_dir": result.run_dir, "directory": directory}


def test_data_deleted_mid_run_changes_nothing_and_a_hanging_verifier_scores_zero(hostile_run: dict[str, Any]) -> None:
    result, run_dir = hostile_run["result"], hostile_run["run_dir"]
    assert result.status == "completed"
    assert not (hostile_run["directory"] / "train.jsonl").exists()
    hang = [p for p in rows_of(run_dir / "predictions" / "val.jsonl") if p["task_id"] == "hang"]
    assert len(hang) == 1 and hang[0]["score"] == 0.0 and not hang[0]["passed"]
    assert "timed out" in hang[0]["error"]
    assert "val/val/pass@1" in result.metrics


def test_no_secret_value_appears_in_any_output_file(hostile_run: dict[str, Any]) -> None:
    run_dir = hostile_run["run_dir"]
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert {"metrics.jsonl", "summary.md", "resolved_config.json", "val.jsonl", "latest", "adapter_config.json"} <= {p.name for p in files}
    for file in files:
        data = file.read_bytes()
        for name, value in SECRETS.items():
            assert value.encode() not in data, f"{name} leaked into {file}"
    snapshot = json.loads((run_dir / "resolved_config.json").read_text())
    assert snapshot["config"]["metadata"]["notes"] == "token ${EVSYS_TEST_REFERENCED}, pw ***"  # redacted by value, no interpolation
    predictions = (run_dir / "predictions" / "val.jsonl").read_text()
    assert "Repeat ***" in predictions and '"expected": "***"' in predictions
    assert yaml.safe_load((hostile_run["directory"] / "config.yaml").read_text())["metadata"]["notes"].startswith("token ${")
    assert os.environ.get("HF_TOKEN") != SECRETS["HF_TOKEN"]
