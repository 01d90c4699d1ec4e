"""Checkpoints, resume and interrupts on a tiny real model: SIGKILL + --resume, SIGINT / SIGTERM, a second Ctrl-C.

Determinism is checked against an uninterrupted run of the same config: the step / split sequence
of metrics.jsonl must be identical and every metric equal within ``REL_TOL`` / ``ABS_TOL`` (on CPU
the measured difference is 0.0: adapter weights, optimizer and RNG states are restored exactly).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from evsys.cli.main import main
from evsys.engine.api import run
from evsys.schema.errors import ConfigError, EvsysError

REL_TOL = 1e-6
ABS_TOL = 1e-6
TIMING_KEYS = ("train/step_seconds", "train/rollout_tokens_per_s", "train/sampled_tokens_per_s")


def rows_of(path: Path) -> list[dict[str, Any]]:
    """Every row of a JSONL file (each line must be whole, valid JSON)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_same_rows(actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Same step / split sequence and the same metrics (timings excepted) within the tolerance."""
    assert [(r["step"], r["split"]) for r in actual] == [(r["step"], r["split"]) for r in expected]
    for got, want in zip(actual, expected, strict=True):
        keys = set(want["metrics"]) - set(TIMING_KEYS)
        assert keys == set(got["metrics"]) - set(TIMING_KEYS)
        for key in keys:
            a, b = got["metrics"][key], want["metrics"][key]
            assert (a is None and b is None) or math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL), (got["step"], key, a, b)


def assert_same_metrics(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    assert set(actual) == set(expected)
    for key, value in expected.items():
        assert math.isclose(actual[key], value, rel_tol=REL_TOL, abs_tol=ABS_TOL), (key, actual[key], value)


def evsys_command() -> list[str]:
    script = Path(sys.executable).with_name("evsys")
    return [str(script)] if script.exists() else [sys.executable, "-m", "evsys.cli.main"]


def wait_for(path: Path, timeout: float = 120.0, process: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the run ended (exit {process.returncode}) before {path} appeared: {process.stderr.read() if process.stderr else ''}")
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.01)


def latest_of(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "checkpoints" / "latest").read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, tiny_run: Callable[..., Path]) -> dict[str, Any]:
    """An uninterrupted run: its metrics.jsonl rows, final metrics and prediction rows."""
    config = tiny_run(tmp_path_factory.mktemp("reference"), tiny_model_dir)
    result = run(config)
    assert result.status == "completed"
    return {
        "rows": rows_of(result.run_dir / "metrics.jsonl"),
        "metrics": result.metrics,
        "predictions": rows_of(result.run_dir / "predictions" / "val.jsonl"),
    }


def signal_when(path: Path, signum: int, delay: float = 0.0) -> threading.Thread:
    """Send ``signum`` to this process once ``path`` exists (the run loop runs in the main thread)."""

    def watch() -> None:
        wait_for(path)
        time.sleep(delay)
        os.kill(os.getpid(), signum)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_sigkill_at_a_random_point_then_resume_matches_the_uninterrupted_run(
    tmp_path: Path, tiny_model_dir: Path, tiny_run: Callable[..., Path], reference: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_run(tmp_path, tiny_model_dir)
    run_dir = tmp_path / "outputs" / "tiny"
    # Kill anywhere after the first checkpoint: mid-step, mid-evaluation, mid-checkpoint. On a quiet
    # machine the tiny run can finish inside the random delay; then it is started again with a shorter one.
    for longest_delay in (0.5, 0.1, 0.02, 0.0):
        shutil.rmtree(run_dir, ignore_errors=True)
        process = subprocess.Popen([*evsys_command(), "run", str(config), "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(run_dir / "checkpoints" / "latest", process=process)
            time.sleep(random.uniform(0.0, longest_delay))
            process.kill()
        finally:
            process.wait(timeout=60)
        if not (run_dir / "summary.md").exists():
            break
    assert process.returncode == -signal.SIGKILL
    assert not (run_dir / "summary.md").exists(), "the run finished before it was killed; nothing was tested"
    killed_at = latest_of(run_dir)["step"]

    assert main(["run", str(config), "--resume", "-q"]) == 0  # the same CLI code as `evsys run --resume`
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == "Status:    completed" and "Traceback" not in captured.err

    assert_same_rows(rows_of(run_dir / "metrics.jsonl"), reference["rows"])
    assert rows_of(run_dir / "predictions" / "val.jsonl") == reference["predictions"]
    summary = (run_dir / "summary.md").read_text()
    assert "Status: completed" in summary and "Steps: 8 / 8" in summary
    final = latest_of(run_dir)
    assert final["completed"] and final["step"] == 8 and final["name"] == "final"
    assert_same_metrics(final["final_metrics"], reference["metrics"])
    for orphan in run_dir.glob("metrics.jsonl.orphaned-*"):  # rows the kill left after the checkpoint, set aside
        assert all(row["step"] > killed_at for row in rows_of(orphan))
    assert not [p for p in (run_dir / "checkpoints").iterdir() if ".tmp-" in p.name]


def test_sigint_stops_after_the_step_with_a_checkpoint_and_resume_finishes_the_same(
    tmp_path: Path, tiny_model_dir: Path, tiny_run: Callable[..., Path], reference: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_run(tmp_path, tiny_model_dir)
    run_dir = tmp_path / "outputs" / "tiny"
    watcher = signal_when(run_dir / "checkpoints" / "latest", signal.SIGINT)
    assert main(["run", str(config), "-q"]) == 130
    watcher.join(timeout=10)
    out = capsys.readouterr().out
    assert out.startswith("Status:    interrupted\n")
    summary = (run_dir / "summary.md").read_text()
    assert "Status: interrupted" in summary and "SIGINT" in summary
    point = latest_of(run_dir)
    rows = rows_of(run_dir / "metrics.jsonl")
    assert point["step"] == max(r["step"] for r in rows) < 8  # the step in progress was finished and saved

    assert main(["run", str(config), "--resume", "-q"]) == 0
    assert capsys.readouterr().out.startswith("Status:    completed\n")
    assert_same_rows(rows_of(run_dir / "metrics.jsonl"), reference["rows"])
    assert_same_metrics(latest_of(run_dir)["final_metrics"], reference["metrics"])
    assert rows_of(run_dir / "predictions" / "val.jsonl") == reference["predictions"]


def test_sigterm_exits_143_with_status_interrupted(tmp_path: Path, tiny_model_dir: Path, tiny_run: Callable[..., Path]) -> None:
    config = tiny_run(tmp_path, tiny_model_dir, params={"max_steps": 6})
    run_dir = tmp_path / "outputs" / "tiny"
    watcher = signal_when(run_dir / "checkpoints" / "latest", signal.SIGTERM)
    result = run(config)
    watcher.join(timeout=10)
    assert (result.status, result.exit_code) == ("interrupted", 143)
    assert "SIGTERM" in (result.error or "")
    assert "Status: interrupted" in (run_dir / "summary.md").read_text()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers are restored after the run


def test_a_second_interrupt_exits_at_once_without_corrupting_files(tmp_path: Path, tiny_model_dir: Path, tiny_run: Callable[..., Path]) -> None:
    config = tiny_run(tmp_path, tiny_model_dir)
    run_dir = tmp_path / "outputs" / "tiny"
    process = subprocess.Popen([*evsys_command(), "run", str(config), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(run_dir / "checkpoints" / "latest", process=process)
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "second interrupt, exiting now" in err and "Traceback" not in err
    rows = rows_of(run_dir / "metrics.jsonl")  # every line is whole JSON
    point = latest_of(run_dir)
    assert point["step"] >= 2 and Path(point["checkpoint"], "adapter_model.safetensors").is_file()
    assert max(r["step"] for r in rows) >= point["step"]


def test_a_failed_checkpoint_save_keeps_the_previous_one(
    tmp_path: Path, tiny_model_dir: Path, tiny_run: Callable[..., Path], reference: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from evsys.backends.local.backend import LocalBackend

    config = tiny_run(tmp_path, tiny_model_dir)
    run_dir = tmp_path / "outputs" / "tiny"
    original = LocalBackend.save_checkpoint
    calls = []

    def full_disk_on_second(self: LocalBackend, name: str) -> str:
        calls.append(name)
        if len(calls) == 2:
            raise OSError(28, "No space left on device", str(run_dir / "checkpoints"))
        return original(self, name)

    monkeypatch.setattr(LocalBackend, "save_checkpoint", full_disk_on_second)
    with pytest.raises(EvsysError) as failure:
        run(config)
    message = str(failure.value)
    assert "No space left on device" in message and "checkpoint of step 2 is intact" in message
    assert latest_of(run_dir)["step"] == 2
    assert "Status: failed" in (run_dir / "summary.md").read_text()
    monkeypatch.setattr(LocalBackend, "save_checkpoint", original)
    assert run(config, resume=True).resumed_from_step == 2
    assert_same_rows(rows_of(run_dir / "metrics.jsonl"), reference["rows"])
    assert list(run_dir.glob("metrics.jsonl.orphaned-*"))  # steps 3-4 of the failed attempt, set aside


def test_run_directory_rules(tmp_path: Path, tiny_model_dir: Path, tiny_run: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    config = tiny_run(tmp_path, tiny_model_dir, params={"max_steps": 2, "save_every": None}, benchmark={"run_every": None})
    run_dir = tmp_path / "outputs" / "tiny"
    assert run(config).status == "completed"

    assert main(["run", str(config), "-q"]) == 1
    assert "run directory already exists; pass --resume to continue it, --overwrite to replace it" in capsys.readouterr().err
    assert main(["run", str(config), "--resume", "--overwrite"]) == 1
    assert "pass one of them" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="already completed all 2 steps"):
        run(config, resume=True)

    changed = config.read_text().replace("learning_rate: 0.01", "learning_rate: 0.02")
    config.write_text(changed)
    with pytest.raises(ConfigError) as conflict:
        run(config, resume=True)
    line = next(i for i, text in enumerate(changed.splitlines(), start=1) if "learning_rate" in text)
    assert f"{config}:{line}:" in str(conflict.value) and "algorithm.params.learning_rate: changed since the run started" in str(conflict.value)

    result = run(config, overwrite=True)
    assert result.status == "completed" and len(rows_of(run_dir / "metrics.jsonl")) == 3  # 2 train rows + the final eval
