"""The SFT walkthrough, end to end on the local backend with the bundled model (CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from evsys.schema.rows import ChatExample

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


def test_walkthrough_runs_two_steps_and_writes_every_output(tmp_path: Path, repo_root: Path, walkthrough_run) -> None:
    result = walkthrough_run(repo_root, WALKTHROUGH.split("/")[-1], tmp_path)
    assert result["config"]["algorithm"]["kind"] == "sft"
    run_dir, rows = result["run_dir"], result["rows"]
    assert run_dir == tmp_path / "outputs" / "sft_capitals"
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
    assert (run_dir / "checkpoints" / "final" / "adapter_model.safetensors").is_file()
