"""evsys-logging reliability: failed writes roll back, resumed runs set rows aside, secrets are redacted."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from evsys.logging.jsonl_writer import JsonlWriter, set_aside_tail
from evsys.logging.local import LocalLogger
from evsys.logging.params import LocalLoggerParams
from evsys.logging.redact import Redactor, referenced_env_names, secret_values
from evsys.schema.protocols import EvalResult, RunContext


def context(tmp_path: Path, resumed_from_step: int = 0) -> RunContext:
    config = SimpleNamespace(model=SimpleNamespace(name="tiny"), backend=SimpleNamespace(kind="local"), algorithm=SimpleNamespace(kind="sdft"))
    return RunContext("demo", tmp_path / "demo", tmp_path, config, max_steps=4, resumed_from_step=resumed_from_step)


class _FailingHandle:
    """A file handle whose writes land partly, then fail as a full disk does."""

    def __init__(self, path: Path) -> None:
        self._real = path.open("ab")

    def tell(self) -> int:
        return self._real.tell()

    def write(self, data: bytes) -> int:
        self._real.write(data[:5])
        self._real.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        self._real.flush()

    def fileno(self) -> int:
        return self._real.fileno()

    def close(self) -> None:
        self._real.close()


def test_a_failed_write_is_rolled_back_and_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    writer = JsonlWriter(path)
    writer.write({"step": 1})
    writer.close()
    writer._handle = _FailingHandle(path)  # type: ignore[assignment]
    with pytest.raises(OSError) as failure:
        writer.write({"step": 2})
    assert (failure.value.errno, failure.value.filename) == (errno.ENOSPC, str(path))
    assert path.read_text() == '{"step": 1}\n'
    writer.write({"step": 3})  # reopens
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 3]


def test_set_aside_tail_moves_rows_after_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3', encoding="utf-8")
    moved = set_aside_tail(path, len('{"step": 1}\n'), "20260101T000000Z")
    assert moved == tmp_path / "metrics.jsonl.orphaned-20260101T000000Z"
    assert path.read_text() == '{"step": 1}\n'
    assert moved.read_text() == '{"step": 2}\n{"step": 3'
    assert set_aside_tail(path, 100, "x") is None


def test_local_logger_resumes_from_its_state(tmp_path: Path) -> None:
    first = LocalLogger(LocalLoggerParams())
    first.on_run_start(context(tmp_path))
    first.on_step_end(1, {"train/mean_loss": 1.0})
    first.on_eval_end(EvalResult("val", "val", 1, {"val/val/pass@1": 0.5}, [{"task_id": "a", "step": 1}]))
    state = json.loads(json.dumps(first.state_dict()))
    first.on_step_end(2, {"train/mean_loss": 0.9})  # after the checkpoint: a crash comes here
    first.on_eval_end(EvalResult("val", "val", 2, {"val/val/pass@1": 0.6}, [{"task_id": "a", "step": 2}]))

    second = LocalLogger(LocalLoggerParams())
    second.load_state_dict(state)
    second.on_run_start(context(tmp_path, resumed_from_step=1))
    second.on_step_end(2, {"train/mean_loss": 0.8})
    second.on_run_end("completed", {"train/mean_loss": 0.8})
    run_dir = tmp_path / "demo"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in rows] == [(1, "train"), (1, "val"), (2, "train")]
    assert rows[-1]["metrics"]["train/mean_loss"] == 0.8
    assert len((run_dir / "predictions" / "val.jsonl").read_text().splitlines()) == 1
    assert {p.name.split(".orphaned-")[0] for p in second.orphaned} == {"metrics.jsonl", "val.jsonl"}
    summary = (run_dir / "summary.md").read_text()
    assert "- step 1: val/val/pass@1 = 0.5" in summary and "step 2: val" not in summary


def test_redaction_by_value(monkeypatch: pytest.MonkeyPatch) -> None:
    environ = {"HF_TOKEN": "hf_abcdef123", "MY_SERVICE_API_KEY": "sk-999999", "OTHER": "value-of-other", "SHORT_TOKEN": "abc", "PATH": "/usr/bin"}
    assert referenced_env_names(["use ${OTHER} and $PATH"]) == {"OTHER", "PATH"}
    assert set(secret_values(environ, {"OTHER"})) == {"hf_abcdef123", "sk-999999", "value-of-other"}
    redactor = Redactor(secret_values(environ))
    assert redactor.value({"a": ["x hf_abcdef123 y", 1.5], "hf_abcdef123": None}) == {"a": ["x *** y", 1.5], "***": None}
    assert redactor.config({"api_key": "anything", "nested": {"hf_token": "t", "note": "sk-999999"}}) == {
        "api_key": "***",
        "nested": {"hf_token": "***", "note": "***"},
    }
