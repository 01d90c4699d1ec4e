"""The GRPO walkthrough, end to end on the local backend with the bundled model (CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from evsys.schema.rows import PromptExample

pytestmark = pytest.mark.slow



def test_configs_differ_only_in_model_and_backend(repo_root: Path, walkthrough_configs) -> None:
    walkthrough_configs(repo_root, "grpo_walkthrough", PromptExample)


def test_walkthrough_runs_two_steps_and_writes_every_output(tmp_path: Path, repo_root: Path, walkthrough_run, documented) -> None:
    result = walkthrough_run(repo_root, "grpo_walkthrough", tmp_path)
    documented.check_walkthrough("walkthrough-grpo.md", "grpo_walkthrough", result)
    assert result["config"]["algorithm"]["kind"] == "grpo"
    run_dir, rows = result["run_dir"], result["rows"]
    assert run_dir == tmp_path / "outputs" / "grpo_capitals"
    for row in rows:
        if row["split"] == "train":
            metrics = row["metrics"]
            assert set(metrics) >= {
                "train/mean_loss",
                "train/reward_mean",
                "train/reward_std",
                "train/frac_groups_all_equal",
                "train/completion_len",
                "train/reward_errors",
                "train/tokens",
                "train/skipped",
            }
            assert 0.0 <= metrics["train/reward_mean"] <= 1.0
            assert metrics["train/reward_errors"] == 0.0
            assert 0.0 < metrics["train/completion_len"] <= result["config"]["algorithm"]["params"]["max_new_tokens"]
            if metrics["train/skipped"] == 1.0:  # every group's rewards were equal: no signal, no update
                assert metrics["train/frac_groups_all_equal"] == 1.0
                assert metrics["train/mean_loss"] == 0.0
            else:
                assert metrics["train/frac_groups_all_equal"] < 1.0
                assert metrics["train/tokens"] > 0
                assert metrics["train/mean_loss"] == pytest.approx(metrics["train/loss_sum"] / metrics["train/tokens"])
    assert (run_dir / "checkpoints" / "final" / "adapter_model.safetensors").is_file()

