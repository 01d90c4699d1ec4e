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
    page_shows_the_fresh_run(result, documented)
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


def page_shows_the_fresh_run(result: dict, documented) -> None:
    """docs/walkthrough-grpo.md's output blocks are a fresh run's: the result line, metrics.jsonl, summary.md."""
    import json

    documented_output, same_text_and_numbers = documented.output, documented.same
    page = "walkthrough-grpo.md"
    run_dir = result["run_dir"]
    shown = documented_output(page, "python examples/grpo_walkthrough/run.py examples/grpo_walkthrough/config.local.yaml")
    metrics = {row["split"]: row["metrics"] for row in result["rows"] if row["step"] == 2}
    final = {"train/mean_loss": metrics["train"]["train/mean_loss"], "val/val/pass@1": metrics["val"]["val/val/pass@1"]}
    same_text_and_numbers(shown[1], f"Metrics:   {final}")

    def comparable(row: dict) -> dict:  # wall-clock figures differ from machine to machine
        kept = {k: v for k, v in row["metrics"].items() if not k.endswith(("_seconds", "_per_s"))}
        return {**row, "metrics": kept}

    documented_rows = [comparable(json.loads(line)) for line in documented_output(page, "cat examples/grpo_walkthrough/outputs/grpo_capitals/metrics.jsonl")]
    fresh_rows = [comparable(row) for row in result["rows"]]
    same_text_and_numbers(json.dumps(documented_rows), json.dumps(fresh_rows))
    summary = documented_output(page, "cat examples/grpo_walkthrough/outputs/grpo_capitals/summary.md")
    same_text_and_numbers("\n".join(summary), (run_dir / "summary.md").read_text().rstrip("\n"))
