"""The user's SDFT walkthrough, end to end on the local backend with the bundled model (CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from evsys.schema.rows import PromptExample

pytestmark = pytest.mark.slow


def test_configs_differ_only_in_model_and_backend(repo_root: Path, walkthrough_configs) -> None:
    walkthrough_configs(repo_root, "sdft_walkthrough", PromptExample)


def test_walkthrough_runs_two_steps_and_writes_every_output(tmp_path: Path, repo_root: Path, walkthrough_run, documented) -> None:
    result = walkthrough_run(repo_root, "sdft_walkthrough", tmp_path)
    documented.check_walkthrough("walkthrough-sdft.md", "sdft_walkthrough", result)
    assert result["config"]["algorithm"]["kind"] == "sdft"
    assert result["run_dir"] == tmp_path / "outputs" / "sdft_capitals"
    for row in result["rows"]:
        if row["split"] == "train":
            metrics = row["metrics"]
            assert set(metrics) >= {"train/mean_loss", "train/answer_tokens", "train/teacher_entropy"}
            assert metrics["train/answer_tokens"] > 0
            # cross-entropy toward the renormalized teacher top-K is never below the teacher's entropy
            assert metrics["train/mean_loss"] >= metrics["train/teacher_entropy"] - 1e-4
    assert (result["run_dir"] / "checkpoints" / "final" / "adapter_model.safetensors").is_file()
