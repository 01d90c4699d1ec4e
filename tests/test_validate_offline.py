"""``evsys validate --deep`` stays offline and light: no torch, no transformers, no SDK, no network."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, socket, sys

def refuse(*args, **kwargs):
    raise OSError("network access during validate --deep")

socket.socket.connect = refuse
socket.create_connection = refuse

from evsys.cli.main import main

code = main(["validate", sys.argv[1], "--deep"])
heavy = sorted(m for m in ("torch", "transformers", "peft", "tinker", "huggingface_hub") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}))
"""


def _rows(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


@pytest.mark.parametrize("config", ["config.yaml", "config.local.yaml"])
def test_deep_validation_imports_no_torch(config: str, tmp_path: Path) -> None:
    env = {**os.environ, "TINKER_API_KEY": "test-key", "HF_HUB_OFFLINE": "1"}
    env.pop("EVSYS_DISABLE_PLUGIN_AUTOLOAD", None)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, f"examples/sdft_walkthrough/{config}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    *printed, last = done.stdout.strip().splitlines()
    result = json.loads(last)
    assert result == {"code": 0, "heavy": []}, done.stderr
    walkthrough = ROOT / "examples" / "sdft_walkthrough" / "data"
    examples = _rows(walkthrough / "train.jsonl")
    tasks = _rows(walkthrough / "val" / "tasks.jsonl")
    deep = f"{examples} examples, 1 benchmark with {tasks} tasks"
    if "local" in config:
        assert printed == [f"OK: examples/sdft_walkthrough/{config} (algorithm sdft, backend local, 2 steps; deep: {deep})"]
    else:  # the Tinker config's prompts are tokenized (in a child process) with its renderer
        [line] = printed
        assert re.fullmatch(
            rf"OK: examples/sdft_walkthrough/config.yaml \(algorithm sdft, backend tinker, 2 steps; deep: {deep}, "
            r"student prompts up to \d+, teacher prompts up to \d+ tokens \+ 64 new of 262144 \(qwen3_5_disable_thinking\)\)",
            line,
        ), line
    assert "Traceback" not in done.stderr
