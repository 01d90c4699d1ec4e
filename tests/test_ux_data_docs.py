"""docs/data.md shows what the commands do: its complete example is the example config, and its
printed lines are what `evsys validate --deep` prints for the same inputs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("datasets")

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs" / "data.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", PAGE, re.MULTILINE | re.DOTALL)
SDFT = "model:   { name: smollm2-135m-instruct }\nbackend: { kind: local }\nalgorithm:\n  kind: sdft\n  params: { learning_rate: 1.0e-4, max_steps: 2, batch_size: 1, lora_rank: 1, topk: 20 }\n"


def evsys(*args: str, cwd: Path, hf_home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HOME": str(hf_home)}
    return subprocess.run([sys.executable, "-m", "evsys.cli.main", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300, check=False)


def page_lines() -> set[str]:
    return {line for _, body in BLOCKS for line in body.splitlines()}


def test_complete_example_is_the_example_config() -> None:
    config = (ROOT / "examples" / "hf_data" / "config.local.yaml").read_text(encoding="utf-8")
    example = next(body for lang, body in BLOCKS if lang == "yaml" and "examples/hf_data/data/train.csv" in body)
    assert example in config


def test_validate_output_of_the_example(tmp_path: Path) -> None:
    done = evsys("validate", "examples/hf_data/config.local.yaml", "--deep", cwd=ROOT, hf_home=tmp_path / "hf_home")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in page_lines()


def test_error_lines_are_real(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text("q,a\nWhat is the capital of France?,Paris\nWhat is the capital of Japan?,\n", encoding="utf-8")
    chat = '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}\n'
    (tmp_path / "data" / "chat.jsonl").write_text(chat * 5, encoding="utf-8")
    hf = "data:\n  source_kind: hf\n  path: data/train.csv\n  columns: { question: q, expected: %s }\n"
    cases = {
        "null.yaml": SDFT + hf % "a",
        "column.yaml": SDFT + hf % "answer",
        "chat.yaml": SDFT + "data: { path: data/chat.jsonl }\n",
        "hub.yaml": SDFT + "data:\n  source_kind: hf\n  path: openai/gsm8k\n  subset: main\n  columns: { question: question, expected: answer }\n",
        "csv.yaml": SDFT + "data: { path: data/train.csv }\n",
    }
    lines = page_lines()
    for name, text in cases.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        done = evsys("validate", name, "--deep", cwd=tmp_path, hf_home=tmp_path / "hf_home")
        assert done.returncode == 1, (name, done.stdout)
        (problem, failed) = done.stderr.splitlines()
        assert failed == f"FAILED: {name} (1 error)"
        if name == "csv.yaml":
            assert problem == "data/train.csv: a .csv file is not JSON lines; read it with data.source_kind: hf"
            assert "(`data/train.csv: a .csv file is not JSON lines;\nread it with data.source_kind: hf`)" in PAGE
        else:
            assert problem in lines, (name, problem)


def test_gsm8k_benchmark_block_is_a_valid_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evsys.schema import plugins
    from evsys.schema.plugins import default_registry, reset_default_registry
    from evsys.schema.validation import load_config

    monkeypatch.setattr(plugins, "_IN_PROCESS", [])  # the page's transform lasts for this test only
    reset_default_registry(None)
    try:
        code = next(body for lang, body in BLOCKS if lang == "python" and "gsm8k_final" in body)
        namespace: dict[str, object] = {}
        exec(compile(code, "docs/data.md", "exec"), namespace)  # registers the page's transform
        assert namespace["gsm8k_final"]({"question": "q", "answer": "so 72\n#### 72"})["final"] == "72"  # type: ignore[operator]
        block = next(body for lang, body in BLOCKS if lang == "yaml" and "openai/gsm8k" in body and "benchmark" in body)
        config = yaml.safe_load(SDFT + "data: { path: train.jsonl }\n" + block)
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        validated = load_config(tmp_path / "c.yaml", default_registry())
        bench = validated.config.metadata.benchmark[0]
        assert bench.data is not None and bench.data.columns == {"question": "question", "expected": "final"}
    finally:
        reset_default_registry(None)  # the next registry is built without it
