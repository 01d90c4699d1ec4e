"""Live smoke test on the real Tinker service: the page's SDFT walkthrough, 2 steps.

Runs only with ``TINKER_API_KEY`` set (and the network): ``pytest -m tinker_live``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.tinker_live,
    pytest.mark.skipif(not os.environ.get("TINKER_API_KEY"), reason="TINKER_API_KEY is not set"),
]

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "examples" / "sdft_walkthrough" / "config.yaml"


def test_walkthrough_runs_two_steps_on_tinker(monkeypatch: pytest.MonkeyPatch) -> None:
    api = pytest.importorskip("evsys.engine.api", reason="evsys.engine.api.run is not built yet")
    if not CONFIG.is_file():
        pytest.skip(f"{CONFIG} is not there yet")
    monkeypatch.chdir(REPO)  # the page's paths are relative to the repository root
    result = api.run(str(CONFIG))
    status = getattr(result, "status", None) or (result.get("status") if isinstance(result, dict) else None)
    assert str(status).lower().endswith("completed"), result
    logs = getattr(result, "logs", None) or getattr(result, "output_dir", None)
    if logs is not None:
        rows = [json.loads(line) for line in (Path(logs) / "metrics.jsonl").read_text().splitlines() if line.strip()]
        train = [r for r in rows if r["split"] == "train"]
        assert [r["step"] for r in train] == [1, 2]
        assert all("train/mean_loss" in r["metrics"] for r in train)
        key = os.environ["TINKER_API_KEY"]
        for path in Path(logs).rglob("*"):
            if path.is_file():
                assert key not in path.read_text(errors="ignore"), path
