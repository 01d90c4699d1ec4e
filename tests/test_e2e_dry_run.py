"""``--dry-run``: the walkthroughs' Tinker configs run end to end offline, with no key, on the simulated service."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from evsys.cli.main import main
from evsys.schema.rows import MetricsRow, PredictionRow

WALKTHROUGHS = ("sdft_walkthrough", "sft_walkthrough", "grpo_walkthrough")


@pytest.fixture(autouse=True)
def _no_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, repo_root: Path) -> None:
    for name in ("TINKER_API_KEY", "TINKER_CREDENTIAL_CMD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(repo_root)  # the configs' data paths are relative to the repository root


def copy_config(repo_root: Path, walkthrough: str, tmp_path: Path, name: str = "config.yaml") -> tuple[Path, dict]:
    config = yaml.safe_load((repo_root / "examples" / walkthrough / name).read_text())
    config["output_dir"] = str(tmp_path / "outputs")
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path, config


@pytest.mark.parametrize("walkthrough", WALKTHROUGHS)
def test_walkthrough_tinker_config_completes_offline_with_the_seeds_outputs(
    walkthrough: str, repo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, config = copy_config(repo_root, walkthrough, tmp_path)
    assert config["backend"] == {"kind": "tinker"} and config["model"] == {"name": "Qwen/Qwen3.5-4B"}
    assert main(["run", str(path), "--dry-run", "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Status:    completed"
    assert out[1].startswith("Metrics:   {'train/mean_loss': ")
    assert "# Dry run on the simulated Tinker service" in out
    assert any(line.startswith("- requests: ") and "forward_backward" in line for line in out)

    run_dir = tmp_path / "outputs" / f"{config['name']}-dry-run"
    assert not (tmp_path / "outputs" / config["name"]).exists()  # the real run's directory stays untouched
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        MetricsRow.model_validate(row)
    assert [(row["step"], row["split"]) for row in rows] == [(1, "train"), (1, "val"), (2, "train"), (2, "val")]
    if walkthrough != "sft_walkthrough":  # SDFT's rollouts (sample_and_score) and GRPO's are metered; SFT samples none
        assert all(row["metrics"]["train/sampled_tokens_per_s"] > 0 for row in rows if row["split"] == "train")
    predictions = [json.loads(line) for line in (run_dir / "predictions" / "val.jsonl").read_text().splitlines()]
    tasks = (repo_root / "examples" / walkthrough / "data/val/tasks.jsonl").read_text().splitlines()
    assert len(predictions) == 2 * len(tasks)
    for prediction in predictions:
        PredictionRow.model_validate(prediction)
    assert "Status: completed" in (run_dir / "summary.md").read_text()
    report = (run_dir / "dry_run.md").read_text()
    assert "tokens sampled: " in report and "tokens trained: " in report
    saved = [json.loads(line) for line in (run_dir / "tinker_checkpoints.jsonl").read_text().splitlines()]
    assert saved and all(row["path"].startswith("tinker://sim-run-") for row in saved)


def test_a_dry_run_is_deterministic_and_replaces_the_previous_one(repo_root: Path, tmp_path: Path) -> None:
    path, config = copy_config(repo_root, "sdft_walkthrough", tmp_path)
    run_dir = tmp_path / "outputs" / f"{config['name']}-dry-run"

    def answers() -> list[str]:
        assert main(["run", str(path), "--dry-run", "--quiet"]) == 0
        rows = (run_dir / "predictions" / "val.jsonl").read_text().splitlines()
        return [json.loads(line)["answer"] for line in rows]

    first = answers()
    assert first == answers()  # no --overwrite needed, and the same answers from the same seed
    assert len(set(first)) > 1  # they depend on the prompt


def test_eval_dry_run_scores_the_base_model_offline(repo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, config = copy_config(repo_root, "sdft_walkthrough", tmp_path)
    assert main(["eval", str(path), "--dry-run", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Status:    completed" in out and "# Dry run on the simulated Tinker service" in out
    directory = tmp_path / "outputs" / f"{config['name']}-dry-run" / "eval" / "base"
    assert {p.name for p in directory.iterdir()} >= {"metrics.jsonl", "predictions", "summary.md", "dry_run.md"}


def test_dry_run_of_a_local_config_is_refused_in_one_line(repo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = copy_config(repo_root, "sdft_walkthrough", tmp_path, "config.local.yaml")
    assert main(["run", str(path), "--dry-run"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert f"{path}:" in err and "backend.kind: --dry-run simulates a remote service, and backend 'local' has none" in err
    assert not (tmp_path / "outputs").exists()


def test_dry_run_with_the_hugging_face_template_is_refused_in_one_line(
    repo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, config = copy_config(repo_root, "sdft_walkthrough", tmp_path)
    config["backend"]["params"] = {"renderer": "huggingface"}  # its tokenizer only comes from the hub
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path), "--dry-run"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    (err,) = [line for line in lines if not line.startswith("[")]  # one line after the progress lines
    assert "Traceback" not in err
    assert "--dry-run renders offline with tml-renderers, and 'Qwen/Qwen3.5-4B' uses its Hugging Face chat template" in err


def test_one_step_off_policy_run_records_its_staleness(repo_root: Path, tmp_path: Path) -> None:
    path, config = copy_config(repo_root, "sdft_walkthrough", tmp_path)
    config["algorithm"]["params"]["max_steps"] = 3
    # which weights an overlapping step samples depends on timing, and so does its rollout: distil every
    # answer token so that a short rollout still trains (a step that trains nothing takes no optimizer step)
    config["algorithm"]["params"]["skip_first_tokens"] = 0
    config["metadata"]["benchmark"][0]["run_every"] = None  # scored at the end: steps 1-3 may overlap
    config["backend"]["params"] = {"max_steps_off_policy": 1}
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path), "--dry-run", "--quiet"]) == 0
    run_dir = tmp_path / "outputs" / f"{config['name']}-dry-run"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [row for row in rows if row["split"] == "train"]
    assert [row["step"] for row in train] == [1, 2, 3]
    staleness = [row["metrics"]["train/off_policy_steps"] for row in train if not row["metrics"].get("train/skipped")]
    # step 1 samples the initial weights; a later step one behind when it started while the previous one
    # trained (with no latency, the previous step may already be done: then 0, as recorded)
    assert staleness[0] == 0.0 and set(staleness) <= {0.0, 1.0}
    assert [row["split"] for row in rows][-1] == "val"


def test_objects_from_before_training_stay_out_of_full_collections_while_it_runs(repo_root: Path, tmp_path: Path) -> None:
    import gc

    from evsys.engine import run
    from evsys.schema.protocols import BaseCallback

    class FreezeCount(BaseCallback):
        def __init__(self) -> None:
            self.during: list[int] = []

        def on_step_end(self, step: int, metrics: dict[str, float]) -> None:
            self.during.append(gc.get_freeze_count())

    path, _ = copy_config(repo_root, "sdft_walkthrough", tmp_path)
    seen = FreezeCount()
    assert run(path, callbacks=[seen], dry_run=True).status == "completed"
    assert len(seen.during) == 2 and min(seen.during) > 10_000  # imports, model and data were frozen at setup
    assert gc.get_freeze_count() == 0  # handed back to the collector when the run ends
