"""--overwrite clears a run's outputs only once the new run's backend exists: a missing API key costs nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from evsys.cli import EvsysError, run


def test_a_missing_tinker_key_with_overwrite_keeps_the_previous_outputs(
    tmp_path: Path, tiny_model_dir: Path, tiny_run, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_path = tiny_run(tmp_path, tiny_model_dir, params={"max_steps": 2, "save_every": None})
    first = run(config_path)
    assert first.status == "completed"
    metrics = (first.run_dir / "metrics.jsonl").read_text()

    config = yaml.safe_load(config_path.read_text())
    config["model"] = {"name": "Qwen/Qwen3.5-4B"}
    config["backend"] = {"kind": "tinker"}
    config_path.write_text(yaml.safe_dump(config))
    monkeypatch.delenv("TINKER_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no credentials file either
    monkeypatch.delenv("TINKER_CREDENTIAL_CMD", raising=False)
    with pytest.raises(EvsysError, match="TINKER_API_KEY is not set"):
        run(config_path, overwrite=True)
    assert (first.run_dir / "metrics.jsonl").read_text() == metrics
    assert (first.run_dir / "summary.md").is_file()
    assert (first.run_dir / "checkpoints" / "final").is_dir()
