"""evsys-logging: local_logger's files and row shapes, and console progress lines."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

from evsys.logging.console import ConsoleProgress
from evsys.logging.local import LocalLogger
from evsys.logging.params import LocalLoggerParams
from evsys.schema.protocols import EvalResult, RunContext
from evsys.schema.rows import MetricsRow, PredictionRow


def context(tmp_path: Path) -> RunContext:
    config = SimpleNamespace(model=SimpleNamespace(name="tiny"), backend=SimpleNamespace(kind="local"), algorithm=SimpleNamespace(kind="sdft"))
    return RunContext("demo", tmp_path / "out" / "demo", tmp_path / "out", config, max_steps=2)


def prediction(task_id: str, passed: bool) -> dict:
    return {"task_id": task_id, "prompt": "Q?", "answer": "A", "score": float(passed), "passed": passed, "step": 1, "sample_index": 0, "expected": "A", "error": None}


def test_local_logger_writes_each_row_as_it_happens(tmp_path: Path) -> None:
    logger = LocalLogger(LocalLoggerParams())
    ctx = context(tmp_path)
    logger.on_run_start(ctx)
    logger.on_step_end(1, {"train/mean_loss": 0.5})
    metrics_file = ctx.run_dir / "metrics.jsonl"
    # flushed before the run ends: a crash now would keep step 1
    assert json.loads(metrics_file.read_text()) == {"step": 1, "split": "train", "metrics": {"train/mean_loss": 0.5}}
    logger.on_eval_end(EvalResult("val", "val", 1, {"val/val/pass@1": 0.5}, [prediction("val_0", True), prediction("val_1", False)]))
    logger.on_step_end(2, {"train/mean_loss": float("nan")})
    logger.on_run_end("completed", {"train/mean_loss": 0.25, "val/val/pass@1": 0.5})

    rows = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    assert rows == [
        {"step": 1, "split": "train", "metrics": {"train/mean_loss": 0.5}},
        {"step": 1, "split": "val", "metrics": {"val/val/pass@1": 0.5}},
        {"step": 2, "split": "train", "metrics": {"train/mean_loss": None}},
    ]
    for row in rows:
        MetricsRow.model_validate(row)
    predictions = [json.loads(line) for line in (ctx.run_dir / "predictions" / "val.jsonl").read_text().splitlines()]
    assert [p["task_id"] for p in predictions] == ["val_0", "val_1"]
    for row in predictions:
        PredictionRow.model_validate(row)
    summary = (ctx.run_dir / "summary.md").read_text()
    assert "Status: completed" in summary
    assert "Steps: 2 / 2" in summary
    assert "- val/val/pass@1: 0.5" in summary
    assert "- step 1: val/val/pass@1 = 0.5" in summary
    assert "[predictions/val.jsonl](predictions/val.jsonl)" in summary


def test_local_logger_dir_override_and_failed_status(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    logger = LocalLogger(LocalLoggerParams(dir=str(target), fsync=True))
    logger.on_run_start(context(tmp_path))
    logger.on_step_end(1, {"train/mean_loss": 1.0})
    logger.on_run_end("failed", {"train/mean_loss": 1.0}, error="DataError: boom")
    assert (target / "metrics.jsonl").exists()
    summary = (target / "summary.md").read_text()
    assert "Status: failed" in summary and "Error: DataError: boom" in summary
    assert "Steps: 1 / 2" in summary


def test_console_progress_lines(tmp_path: Path) -> None:
    stream = io.StringIO()
    console = ConsoleProgress(stream=stream)
    console.on_run_start(context(tmp_path))
    console.on_step_end(1, {"train/mean_loss": 0.5})
    console.on_eval_end(EvalResult("val", "val", 1, {"val/val/pass@1": 0.25}, []))
    console.on_step_end(2, {"train/mean_loss": 0.25})
    console.on_run_end("completed", {})
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("step 1/2 | loss 0.5000 | ")
    assert lines[1] == "eval step 1 | val/val/pass@1 0.250"
    assert lines[2].startswith("step 2/2 | loss 0.2500 | val/val/pass@1 0.250 | ")
    assert lines[3].startswith("run completed after ")
