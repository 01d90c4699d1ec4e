"""The SFT walkthrough, end to end on the local backend with the bundled model (CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evsys.schema.rows import ChatExample, MetricsRow, PredictionRow

pytestmark = pytest.mark.slow

WALKTHROUGH = "examples/sft_walkthrough"


def test_configs_differ_only_in_model_and_backend(repo_root: Path) -> None:
    tinker = yaml.safe_load((repo_root / WALKTHROUGH / "config.yaml").read_text())
    local = yaml.safe_load((repo_root / WALKTHROUGH / "config.local.yaml").read_text())
    assert tinker["backend"] == {"kind": "tinker"} and local["backend"] == {"kind": "local"}
    assert local["model"] == {"name": "smollm2-135m-instruct"}
    for config in (tinker, local):
        del config["model"], config["backend"]
    assert tinker == local
    for line in (repo_root / WALKTHROUGH / "data/train.jsonl").read_text().splitlines():
        ChatExample.model_validate_json(line)


def test_walkthrough_runs_two_steps_and_writes_every_output(tmp_path: Path, repo_root: Path) -> None:
    config = yaml.safe_load((repo_root / WALKTHROUGH / "config.local.yaml").read_text())
    assert config["algorithm"]["kind"] == "sft"
    assert config["algorithm"]["params"]["max_steps"] == 2
    config["output_dir"] = str(tmp_path / "outputs")
    config_path = tmp_path / "config.local.yaml"
    config_path.write_text(yaml.safe_dump(config))

    validate = subprocess.run(
        [sys.executable, "-m", "evsys.cli.main", "validate", str(config_path), "--deep"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
    )
    assert validate.returncode == 0, validate.stderr
    assert validate.stdout.startswith("OK: ")

    completed = subprocess.run(
        [sys.executable, f"{WALKTHROUGH}/run.py", str(config_path)],
        cwd=repo_root,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=900,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Traceback" not in completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert lines[0] == "Status:    completed"
    assert lines[1].startswith("Metrics:   {'train/mean_loss': ")
    assert lines[2] == f"Logs:      {tmp_path / 'outputs'} (metrics.jsonl, predictions/, summary.md)"

    run_dir = tmp_path / "outputs" / "sft_capitals"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        MetricsRow.model_validate(row)
    assert [(row["step"], row["split"]) for row in rows] == [(1, "train"), (1, "val"), (2, "train"), (2, "val")]
    for row in rows:
        if row["split"] == "train":
            metrics = row["metrics"]
            assert set(metrics) >= {"train/mean_loss", "train/loss_sum", "train/target_tokens", "train/skipped"}
            assert metrics["train/skipped"] == 0.0
            # "The capital of X is Y." plus the end-of-turn token: a handful of answer tokens, all trained on
            assert 5 <= metrics["train/target_tokens"] <= 20
            assert metrics["train/mean_loss"] == pytest.approx(
                metrics["train/loss_sum"] / metrics["train/target_tokens"]
            )
            assert metrics["train/mean_loss"] > 0.0
        else:
            assert set(row["metrics"]) == {"val/val/pass@1"}
            assert 0.0 <= row["metrics"]["val/val/pass@1"] <= 1.0

    predictions = [json.loads(line) for line in (run_dir / "predictions" / "val.jsonl").read_text().splitlines()]
    tasks = [json.loads(line) for line in (repo_root / WALKTHROUGH / "data/val/tasks.jsonl").read_text().splitlines()]
    assert len(predictions) == 2 * len(tasks)
    assert {p["task_id"] for p in predictions} == {t["task_id"] for t in tasks}
    for prediction in predictions:
        PredictionRow.model_validate(prediction)
    last_step = [p for p in predictions if p["step"] == 2]
    assert rows[-1]["metrics"]["val/val/pass@1"] == pytest.approx(sum(p["passed"] for p in last_step) / len(last_step))

    assert (run_dir / "checkpoints" / "final" / "adapter_model.safetensors").is_file()
    summary = (run_dir / "summary.md").read_text()
    assert "Status: completed" in summary
    assert "val/val/pass@1" in summary
