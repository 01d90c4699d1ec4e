"""`evsys init DIR`: a project that passes `validate --deep` and runs as written from inside DIR."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator

from evsys.cli.main import main


def init(directory: Path, *args: str) -> list[str]:
    code = main(["init", str(directory), *args])
    assert code == 0
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def evsys(cwd: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EVSYS_PROGRESS": "lines"}
    return subprocess.run([sys.executable, "-m", "evsys.cli.main", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("algorithm", ["sdft", "sft", "grpo"])
@pytest.mark.parametrize("backend", ["local", "tinker"])
def test_init_writes_a_project_that_validates_from_inside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], algorithm: str, backend: str
) -> None:
    project = tmp_path / "my project"
    files = init(project, "--algorithm", algorithm, "--backend", backend)
    assert files == [".gitignore", "config.yaml", "data/train.jsonl", "data/val/tasks.jsonl", "run_config.schema.json"]
    out = capsys.readouterr().out
    assert out.startswith(f"Created {algorithm} project ({backend} backend) in {project}:\n")
    assert out.endswith("  evsys validate config.yaml --deep\n  evsys run config.yaml\n")
    text = (project / "config.yaml").read_text()
    assert text.splitlines()[0] == "# yaml-language-server: $schema=run_config.schema.json"
    schema = json.loads((project / "run_config.schema.json").read_text())
    Draft7Validator.check_schema(schema)
    assert list(Draft7Validator(schema).iter_errors(yaml.safe_load(text))) == []
    monkeypatch.chdir(project)
    monkeypatch.setenv("TINKER_API_KEY", "test-key")
    code = main(["validate", "config.yaml", "--deep"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.startswith(f"OK: config.yaml (algorithm {algorithm}, backend {backend}, 2 steps; deep: 8 examples, 1 benchmark with 4 tasks")


def test_init_never_replaces_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.yaml").write_text("mine")
    assert main(["init", str(tmp_path)]) == 1
    assert capsys.readouterr().err.splitlines()[0] == f"{tmp_path}/config.yaml: already exists; evsys init never replaces a file (choose a new directory)"
    assert (tmp_path / "config.yaml").read_text() == "mine"
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("algorithm", ["sft", "grpo"])
def test_init_projects_train_two_steps(tmp_path: Path, tiny_model_dir: Path, algorithm: str) -> None:
    """sft and grpo projects on a tiny model (--set model.name); the sdft project runs the bundled model below."""
    pytest.importorskip("torch")
    project = tmp_path / "proj"
    init(project, "--algorithm", algorithm)
    done = evsys(project, "run", "config.yaml", "--set", f"model.name={tiny_model_dir}", "--set", "backend.params.device=cpu")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "Status:    completed"
    rows = [json.loads(line) for line in (project / "outputs" / f"proj_{algorithm}" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in rows] == [(1, "train"), (1, "val"), (2, "train"), (2, "val")]


@pytest.mark.slow
def test_init_project_runs_as_written_with_the_bundled_model(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    project = tmp_path / "starter"
    init(project)
    validate = evsys(project, "validate", "config.yaml", "--deep")
    assert validate.returncode == 0 and validate.stdout.startswith("OK: config.yaml (algorithm sdft, backend local, 2 steps"), validate.stderr
    done = evsys(project, "run", "config.yaml")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "Status:    completed",
        done.stdout.splitlines()[1],
        "Logs:      outputs (metrics.jsonl, predictions/, summary.md)",
    ]
    assert done.stdout.splitlines()[1].startswith("Metrics:   {'train/mean_loss': ")
    assert "data: 8 training examples from data/train.jsonl" in done.stderr
    assert "benchmarks: val (4 tasks, every 1 step)" in done.stderr
    run_dir = project / "outputs" / "starter_sdft"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in rows] == [(1, "train"), (1, "val"), (2, "train"), (2, "val")]
    assert (run_dir / "checkpoints" / "final" / "adapter_model.safetensors").is_file()
