"""The evsys-verify command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evsys.schema.rows import PredictionRow
from evsys.verifiers.cli import main


def _jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    tasks = _jsonl(
        tmp_path / "tasks.jsonl",
        [
            {"task_id": "q1", "question": "2+2?", "verifier": {"fn_name": "numeric_match", "expected": 4}},
            {
                "task_id": "q2",
                "question": "Capital of France?",
                "verifier": {"fn_name": "contains", "expected": "Paris"},
            },
        ],
    )
    predictions = _jsonl(
        tmp_path / "predictions.jsonl",
        [
            {"task_id": "q1", "answer": "4"},
            {"task_id": "q1", "answer": "The answer is 4."},
            {"task_id": "q1", "answer": "5"},
            {"task_id": "q1", "answer": "4.0"},
            {"task_id": "q2", "answer": "Lyon", "sample_index": 1},
            {"id": "q2", "output": "Paris", "sample_index": 0},
            {"task_id": "q2", "completion": "Lyon"},
            {"task_id": "q2", "response": "Lyon"},
        ],
    )
    return tasks, predictions


def test_scores_and_prints_json_then_a_table(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks, predictions = files
    out = tmp_path / "scored.jsonl"
    assert main([str(tasks), str(predictions), "--metrics", "pass@1,maj@4,pass@4", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed.splitlines()[0])
    assert summary == {"metrics": {"pass@1": 0.5, "maj@4": 0.5, "pass@4": 1.0}, "tasks": 2, "samples": 8, "errors": 0}
    assert "pass@1  0.5000" in printed and "maj@4   0.5000" in printed
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 8 and all(PredictionRow.model_validate(r) for r in rows)
    assert rows[4]["answer"] == "Paris" and rows[4]["sample_index"] == 0  # ordered by sample_index


def test_a_benchmark_directory_and_json_only(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    tasks, predictions = files
    assert main([str(tasks.parent), str(predictions), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == {"pass@1": 0.5}


def test_bad_input_exits_2_with_located_messages(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks, _ = files
    bad = _jsonl(tmp_path / "bad.jsonl", [{"task_id": "q1"}, "{x", {"task_id": "zz", "answer": "1"}])
    assert main([str(tasks), str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:1: answer: a prediction needs an 'answer'" in err
    assert f"{bad}:2: invalid JSON" in err
    unknown = _jsonl(tmp_path / "unknown.jsonl", [{"task_id": "q1", "answer": "4"}, {"task_id": "zz", "answer": "1"}])
    assert main([str(tasks), str(unknown)]) == 2
    assert f"{unknown}:2: task_id: unknown task_id 'zz'" in capsys.readouterr().err
    assert main([str(tasks), str(unknown), "--metrics", "pass@x"]) == 2


def test_unknown_verifier_functions_fail_before_scoring(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, predictions = files
    tasks = _jsonl(
        tmp_path / "typo.jsonl",
        [{"task_id": "q1", "question": "?", "verifier": {"fn_name": "contians", "expected": "4"}}],
    )
    assert main([str(tasks), str(predictions)]) == 2
    assert (
        f"{tasks}:1: verifier.fn_name: unknown verifier function 'contians' (did you mean 'contains'?)"
        in capsys.readouterr().err
    )


def test_missing_predictions_warn_or_fail_with_strict(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tasks, _ = files
    partial = _jsonl(tmp_path / "partial.jsonl", [{"task_id": "q1", "answer": "4"}])
    assert main([str(tasks), str(partial)]) == 0
    captured = capsys.readouterr()
    assert "1 of 2 tasks have no predictions" in captured.err
    assert json.loads(captured.out.splitlines()[0])["metrics"] == {"pass@1": 1.0}
    assert main([str(tasks), str(partial), "--strict"]) == 2


def test_runs_as_a_program(files: tuple[Path, Path]) -> None:
    tasks, predictions = files
    done = subprocess.run(
        [sys.executable, "-m", "evsys.verifiers.cli", str(tasks), str(predictions), "--metrics", "pass@1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[0])["metrics"] == {"pass@1": 0.5}


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib import metadata

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"evsys-verify, version {metadata.version('evsys-verifiers')}"
    assert main(["--help"]) == 0
    assert "--sandbox [auto|bwrap|none]" in capsys.readouterr().out


def test_usage_errors_exit_2(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    tasks, predictions = files
    assert main([str(tasks)]) == 2
    assert "Missing argument 'PREDICTIONS'" in capsys.readouterr().err
    assert main([str(tasks), str(predictions), "--sandbox", "docker"]) == 2
    assert "'docker' is not one of 'auto', 'bwrap', 'none'" in capsys.readouterr().err


def test_a_demanded_sandbox_that_cannot_run_is_one_line_and_exit_2(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from evsys.verifiers import sandbox

    monkeypatch.setattr(sandbox, "bwrap_problem", lambda: "bubblewrap (bwrap) not found")
    tasks, predictions = files
    try:
        assert main([str(tasks), str(predictions), "--sandbox", "bwrap"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [
            "evsys-verify: sandbox 'bwrap' is required but bubblewrap (bwrap) not found: install bubblewrap "
            "(Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap)"
        ]
        assert main([str(tasks), str(predictions), "--sandbox", "none", "--format", "json"]) == 0
        assert json.loads(capsys.readouterr().out)["metrics"] == {"pass@1": 0.5}
    finally:
        sandbox.set_sandbox(None)


def test_without_bubblewrap_the_user_is_told_once_in_one_line(files: tuple[Path, Path], tmp_path: Path) -> None:
    tasks = _jsonl(
        tmp_path / "programs.jsonl",
        [
            {
                "task_id": f"p{i}",
                "prompt": "p",
                "verifier": {"fn_name": "python_tests", "expected": "assert 1 + 1 == 2"},
            }
            for i in range(3)
        ],
    )
    predictions = _jsonl(tmp_path / "answers.jsonl", [{"task_id": f"p{i}", "answer": "x = 1"} for i in range(3)])
    done = subprocess.run(  # no bwrap on this PATH
        [sys.executable, "-m", "evsys.verifiers.cli", str(tasks), str(predictions), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": str(tmp_path), "EVSYS_VERIFIER_SANDBOX": "auto"},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["metrics"] == {"pass@1": 1.0}
    assert done.stderr.splitlines() == [
        "evsys-verify: warning: verifier programs (python_tests, subprocess checkers) run unsandboxed, with resource "
        "limits only: bubblewrap (bwrap) not found; install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; "
        "Fedora: dnf install bubblewrap), or set EVSYS_VERIFIER_SANDBOX=none to accept this"
    ]
