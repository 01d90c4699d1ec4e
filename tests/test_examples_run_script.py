"""The walkthroughs' ``examples/*/run.py`` share one runner, :func:`evsys.cli.script.run_script`."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from evsys.cli.script import run_script

WALKTHROUGHS = ["sdft_walkthrough", "sft_walkthrough", "grpo_walkthrough"]


@pytest.mark.parametrize("walkthrough", WALKTHROUGHS)
def test_run_py_calls_the_shared_runner_with_its_own_config(repo_root: Path, walkthrough: str) -> None:
    source = (repo_root / "examples" / walkthrough / "run.py").read_text(encoding="utf-8")
    calls = [
        node for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "run_script"
    ]
    assert [ast.literal_eval(call.args[0]) for call in calls] == [f"examples/{walkthrough}/config.yaml"]
    assert (repo_root / "examples" / walkthrough / "config.yaml").is_file()


@pytest.mark.parametrize("walkthrough", WALKTHROUGHS)
def test_run_py_reports_a_missing_config_in_one_line(repo_root: Path, walkthrough: str, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    completed = subprocess.run(
        [sys.executable, f"examples/{walkthrough}/run.py", str(missing)],
        cwd=repo_root, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 1
    assert completed.stdout == ""
    assert "Traceback" not in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1
    assert str(missing) in completed.stderr


def test_run_script_runs_the_default_config_and_prints_the_three_lines(
    tmp_path: Path, tiny_model_dir: Path, tiny_run, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_run(tmp_path, tiny_model_dir, params={"max_steps": 2, "save_every": 2}, benchmark={"run_every": 2})
    assert run_script(str(config), argv=[]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Status:    completed"
    assert lines[1].startswith("Metrics:   {'train/mean_loss': ")
    assert lines[2] == f"Logs:      {tmp_path / 'outputs'} (metrics.jsonl, predictions/, summary.md)"
    # a second call replaces the first run, as the walkthrough's repeated `python run.py` does
    assert run_script("unused-default.yaml", argv=[str(config)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "Status:    completed"
