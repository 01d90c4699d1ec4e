"""The SFT walkthrough, end to end on the local backend with the bundled model (CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from evsys.schema.rows import ChatExample

pytestmark = pytest.mark.slow



def test_configs_differ_only_in_model_and_backend(repo_root: Path, walkthrough_configs) -> None:
    walkthrough_configs(repo_root, "sft_walkthrough", ChatExample)


def test_walkthrough_runs_two_steps_and_writes_every_output(tmp_path: Path, repo_root: Path, walkthrough_run, documented) -> None:
    result = walkthrough_run(repo_root, "sft_walkthrough", tmp_path)
    documented.check_walkthrough("walkthrough-sft.md", "sft_walkthrough", result)
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
            # reduction: mean (the cookbook's): each example's weights sum to 1, so the loss sum is the sum
            # of the examples' per-token means and mean_loss their mean over the batch
            batch_size = result["config"]["algorithm"]["params"]["batch_size"]
            assert metrics["train/mean_loss"] == pytest.approx(metrics["train/loss_sum"] / batch_size)
            assert metrics["train/mean_loss"] > 0.0
    assert (run_dir / "checkpoints" / "final" / "adapter_model.safetensors").is_file()
