"""Records of Tinker sessions (request shapes, response fields) replayed through the service's rules."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from evsys.backends.tinker.recording import replay
from evsys.schema.errors import EvsysError

SAMPLE = Path(__file__).parent / "data" / "tinker_record_sample.jsonl"
REPO = Path(__file__).resolve().parents[3]


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_the_shipped_sample_replays_cleanly() -> None:
    assert rows(SAMPLE)[0] == {"kind": "header", "source": "simulator", "format": 1}  # made by the simulator, not the service
    counts = replay(SAMPLE)
    assert counts["forward_backward"] == 2 and counts["optim_step"] == 2 and counts["sample"] > 2


def test_a_real_recording_replays_cleanly() -> None:
    record = os.environ.get("EVSYS_TINKER_RECORD")
    if not record:
        pytest.skip(
            "no real recording: with a Tinker key, run `python scripts/record_tinker_session.py --out FILE` "
            "and set EVSYS_TINKER_RECORD=FILE (the shipped sample comes from the simulator)"
        )
    assert rows(Path(record))[0]["source"] == "service"
    assert replay(Path(record))["forward_backward"] >= 1


def tampered(tmp_path: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    lines = rows(SAMPLE)
    for row in lines:
        if edit(row):
            break
    path = tmp_path / "record.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in lines))
    return path


def test_a_record_with_a_request_the_service_refuses_fails_at_its_line(tmp_path: Path) -> None:
    def add_advantages(row: dict) -> bool:
        if row["kind"] == "request" and row["method"] == "forward_backward":
            row["shape"]["data"][0]["inputs"]["advantages"] = {"dtype": "float32", "shape": [5], "min": 0, "max": 0, "finite": True}
            return True
        return False

    path = tampered(tmp_path, add_advantages)
    with pytest.raises(EvsysError) as info:
        replay(path)
    message = str(info.value)
    assert message.startswith(f"{path}:") and "\n" not in message
    assert "forward_backward(cross_entropy) datum 0: loss_fn_inputs has advantages, which it does not take" in message


def test_a_record_whose_response_lacks_the_loss_fails(tmp_path: Path) -> None:
    def drop_loss(row: dict) -> bool:
        if row["kind"] == "response" and row["method"] == "forward_backward":
            row["fields"]["metrics"] = []
            return True
        return False

    with pytest.raises(EvsysError, match="no 'loss:sum' metric"):
        replay(tampered(tmp_path, drop_loss))


def test_recording_a_grpo_dry_run_records_the_policy_gradient_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("record_tinker_session", REPO / "scripts" / "record_tinker_session.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.chdir(REPO)
    out = tmp_path / "grpo.jsonl"
    assert script.main(["examples/grpo_walkthrough/config.yaml", "--dry-run", "--out", str(out)]) == 0
    recorded = [r for r in rows(out) if r["kind"] == "request" and r["method"] == "forward_backward"]
    assert recorded and all(r["shape"]["loss_fn"] == "importance_sampling" for r in recorded)
    assert all(set(d["inputs"]) == {"target_tokens", "logprobs", "advantages"} for r in recorded for d in r["shape"]["data"])
    assert not any(json.dumps(r).count("Paris") for r in rows(out))  # shapes only, no texts
