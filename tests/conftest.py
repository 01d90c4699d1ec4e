"""Shared fixtures for the cross-package and end-to-end tests."""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (configs' relative paths are resolved against it)."""
    return REPO_ROOT


@pytest.fixture(scope="session", autouse=True)
def _shared_model_cache() -> None:
    """Keep the converted bundled model in one cache for the whole session (and between sessions)."""
    os.environ.setdefault("EVSYS_CACHE_DIR", str(REPO_ROOT / ".evsys-cache"))


EvsysCli = Callable[[list[str]], tuple[int, str, str]]


@pytest.fixture
def evsys_cli(capsys: pytest.CaptureFixture[str]) -> EvsysCli:
    """Run ``evsys ARGS`` in this process: ``evsys_cli(["validate", "c.yaml"]) -> (exit code, stdout, stderr)``."""
    from evsys.cli.main import main

    def run(args: list[str]) -> tuple[int, str, str]:
        code = main(args)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def build_tiny_workdir(directory: Path) -> Path:
    """``directory`` with a tiny random Llama at ``tiny/`` and the SDFT walkthrough's data at ``data/``."""
    from evsys.backends.local.testing import build_tiny_model_dir

    build_tiny_model_dir(directory / "tiny")
    data = directory / "data"
    (data / "val").mkdir(parents=True)
    (data / "train.jsonl").write_text((REPO_ROOT / "examples/sdft_walkthrough/data/train.jsonl").read_text())
    (data / "val" / "tasks.jsonl").write_text((REPO_ROOT / "examples/sdft_walkthrough/data/val/tasks.jsonl").read_text())
    return directory


def write_tiny_config(directory: Path, name: str = "tiny_run", *, max_steps: int = 2, run_every: int = 1, tasks: int = 2) -> Path:
    """``directory/<name>.yaml``: a small SDFT config on :func:`build_tiny_workdir`'s model and data, with a
    benchmark of the first ``tasks`` val tasks every ``run_every`` steps."""
    config = directory / f"{name}.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            name: {name}
            output_dir: outputs
            model: {{name: tiny}}
            backend: {{kind: local, params: {{device: cpu}}}}
            algorithm:
              kind: sdft
              params: {{learning_rate: 1.0e-2, max_steps: {max_steps}, batch_size: 1, lora_rank: 2, topk: 4, max_new_tokens: 4}}
            data: {{path: data/train.jsonl}}
            metadata:
              benchmark:
                - {{name: val, path: data/val, run_every: {run_every}, metrics: [pass@1], max_new_tokens: 4, limit: {tasks}}}
            """
        ),
        encoding="utf-8",
    )
    return config


@pytest.fixture(scope="session")
def tiny_config() -> Callable[..., Path]:
    """:func:`write_tiny_config`."""
    return write_tiny_config


@pytest.fixture(scope="session")
def tiny_workdir() -> Callable[[Path], Path]:
    """:func:`build_tiny_workdir`, for a test module's ``workdir`` fixture (which :func:`in_workdir` enters)."""
    return build_tiny_workdir


@pytest.fixture
def in_workdir(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test module's ``workdir`` fixture as the current directory, with line-per-step progress."""
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("EVSYS_PROGRESS", "lines")
    return workdir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama and byte-level tokenizer on disk (built offline, for fast real runs)."""
    from evsys.backends.local.testing import build_tiny_model_dir

    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))


TINY_TRAIN_ROWS = (
    {"inputs": {"question": "What is the capital of France?"}, "expected": "Paris"},
    {"inputs": {"question": "What is the capital of Japan?"}, "expected": "Tokyo"},
    {"inputs": {"question": "What is the capital of Italy?"}, "expected": "Rome"},
)
TINY_TASKS = (
    {"task_id": "v0", "instruction": "Capital of Germany?", "verifier": {"kind": "in_process", "fn_name": "contains", "expected": "Berlin"}},
    {"task_id": "v1", "instruction": "Capital of Spain?", "verifier": {"kind": "in_process", "fn_name": "contains", "expected": "Madrid"}},
)


def write_tiny_run(
    directory: Path,
    model_dir: Path,
    *,
    params: dict | None = None,
    tasks: tuple[dict, ...] | list[dict] = TINY_TASKS,
    train_rows: tuple[dict, ...] | list[dict] = TINY_TRAIN_ROWS,
    benchmark: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a tiny SDFT run (config.yaml, data, benchmark) under ``directory``; returns the config path.

    Defaults: 8 steps, a checkpoint every 2, a 2-task benchmark every 3 steps; outputs in
    ``directory/outputs/tiny``. ``params``, ``benchmark`` and ``extra`` (top-level keys) override.
    """
    import json

    import yaml

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "val").mkdir(exist_ok=True)
    (directory / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train_rows), encoding="utf-8")
    (directory / "val" / "tasks.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tasks), encoding="utf-8")
    algorithm = {
        "learning_rate": 0.01, "max_steps": 8, "batch_size": 1, "lora_rank": 2, "topk": 4,
        "user_template": "{question}", "save_every": 2, "max_new_tokens": 6, "seed": 3,
    }
    algorithm.update(params or {})
    bench = {"name": "val", "path": str(directory / "val"), "run_every": 3, "max_new_tokens": 4, "metrics": ["pass@1"]}
    bench.update(benchmark or {})
    config = {
        "name": "tiny",
        "output_dir": str(directory / "outputs"),
        "model": {"name": str(model_dir)},
        "backend": {"kind": "local", "params": {"device": "cpu"}},
        "algorithm": {"kind": "sdft", "params": algorithm},
        "data": {"source_kind": "jsonl", "path": str(directory / "train.jsonl")},
        "metadata": {"benchmark": [bench]},
        "callbacks": [{"kind": "local_logger"}],
    }
    config.update(extra or {})
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_run() -> object:
    """:func:`write_tiny_run`, for tests that need a real (tiny) training run."""
    return write_tiny_run


def run_walkthrough_locally(repo_root: Path, walkthrough: str, tmp_path: Path) -> dict:
    """Run ``examples/<walkthrough>/config.local.yaml`` as the README does (validate --deep, then run.py),
    outputs redirected into ``tmp_path``, and check what every walkthrough promises: the three printed
    lines, metrics.jsonl rows (train and val at both steps), one prediction per val task per step whose
    pass rate is the logged pass@1, and summary.md. Returns the config, run_dir, rows and predictions.
    """
    import json
    import subprocess
    import sys

    import yaml

    from evsys.schema.rows import MetricsRow, PredictionRow

    config = yaml.safe_load((repo_root / "examples" / walkthrough / "config.local.yaml").read_text())
    assert config["algorithm"]["params"]["max_steps"] == 2
    config["output_dir"] = str(tmp_path / "outputs")
    config_path = tmp_path / "config.local.yaml"
    config_path.write_text(yaml.safe_dump(config))

    def call(*args: str, timeout: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args], cwd=repo_root, capture_output=True, text=True, env=os.environ.copy(), timeout=timeout
        )

    validate = call("-m", "evsys.cli.main", "validate", str(config_path), "--deep", timeout=300)
    assert validate.returncode == 0, validate.stderr
    assert validate.stdout.startswith("OK: ")

    completed = call(f"examples/{walkthrough}/run.py", str(config_path), timeout=900)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Traceback" not in completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert lines[0] == "Status:    completed"
    assert lines[1].startswith("Metrics:   {'train/mean_loss': ")
    assert lines[2] == f"Logs:      {tmp_path / 'outputs'} (metrics.jsonl, predictions/, summary.md)"

    run_dir = tmp_path / "outputs" / config["name"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        MetricsRow.model_validate(row)
    assert [(row["step"], row["split"]) for row in rows] == [(1, "train"), (1, "val"), (2, "train"), (2, "val")]
    for row in rows:
        if row["split"] == "val":
            assert set(row["metrics"]) == {"val/val/pass@1"}
            assert 0.0 <= row["metrics"]["val/val/pass@1"] <= 1.0

    predictions = [json.loads(line) for line in (run_dir / "predictions" / "val.jsonl").read_text().splitlines()]
    tasks_file = repo_root / "examples" / walkthrough / "data/val/tasks.jsonl"
    tasks = [json.loads(line) for line in tasks_file.read_text().splitlines()]
    assert len(predictions) == 2 * len(tasks)  # every val question, at both steps
    assert {p["task_id"] for p in predictions} == {t["task_id"] for t in tasks}
    for prediction in predictions:
        PredictionRow.model_validate(prediction)
        assert set(prediction) >= {"task_id", "prompt", "answer", "score", "passed"}
    last_step = [p for p in predictions if p["step"] == 2]
    assert rows[-1]["metrics"]["val/val/pass@1"] == pytest.approx(sum(p["passed"] for p in last_step) / len(last_step))

    summary = (run_dir / "summary.md").read_text()
    assert "Status: completed" in summary
    assert "val/val/pass@1" in summary
    return {"config": config, "run_dir": run_dir, "rows": rows, "predictions": predictions}


@pytest.fixture(scope="session")
def walkthrough_run() -> object:
    """:func:`run_walkthrough_locally`, for the walkthroughs' end-to-end tests."""
    return run_walkthrough_locally


#: algorithm params a walkthrough's config.local.yaml may add for the bundled 135M model, each on a
#: line with a comment saying why (the Tinker config keeps tinker-cookbook's defaults)
LOCAL_ONLY_PARAMS = frozenset({"teacher_template"})


def check_walkthrough_configs(repo_root: Path, walkthrough: str, row_model: type) -> None:
    """config.yaml (Tinker) and config.local.yaml (local) differ only in model and backend (and in
    :data:`LOCAL_ONLY_PARAMS`, commented), and every training row is a valid ``row_model``."""
    import yaml

    folder = repo_root / "examples" / walkthrough
    tinker = yaml.safe_load((folder / "config.yaml").read_text())
    local_text = (folder / "config.local.yaml").read_text()
    local = yaml.safe_load(local_text)
    assert tinker["backend"] == {"kind": "tinker"}
    assert local["backend"] == {"kind": "local", "params": {"rollout_weights": "model"}}  # exact rollouts: the page's numbers on any CPU
    assert local["model"] == {"name": "smollm2-135m-instruct"}
    local_params = local["algorithm"]["params"]
    for key in set(local_params) - set(tinker["algorithm"]["params"]):
        assert key in LOCAL_ONLY_PARAMS, f"config.local.yaml adds algorithm param {key!r}"
        (line,) = [x for x in local_text.splitlines() if x.strip().startswith(f"{key}:")]
        assert "#" in line, f"config.local.yaml sets {key} without a comment saying why"
        del local_params[key]
    for config in (tinker, local):
        del config["model"], config["backend"]
    assert tinker == local
    for line in (folder / "data/train.jsonl").read_text().splitlines():
        row_model.model_validate_json(line)


@pytest.fixture(scope="session")
def walkthrough_configs() -> object:
    """:func:`check_walkthrough_configs`."""
    return check_walkthrough_configs


# --------------------------------------------------------------------------- documented output


def documented_output(page: str, command: str) -> list[str]:
    """The output lines a page shows for ``$ command`` in its console blocks (up to the next ``$`` line or the block's end)."""
    text = (REPO_ROOT / "docs" / page).read_text(encoding="utf-8")
    for block in re.findall(r"^```console\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        lines = block.splitlines()
        for index, line in enumerate(lines):
            if line == f"$ {command}":
                rest = lines[index + 1 :]
                end = next((i for i, item in enumerate(rest) if item.startswith("$ ")), len(rest))
                return rest[:end]
    raise AssertionError(f"{page} shows no `$ {command}`")


NUMBER = re.compile(r"-?\d+\.\d+(?:e-?\d+)?")


def same_text_and_numbers(documented: str, produced: str, *, rel: float = 1e-3) -> None:
    """The texts agree word for word, and their numbers to ``rel`` (a CPU's last digits may differ)."""
    assert NUMBER.sub("#", documented) == NUMBER.sub("#", produced)
    for shown, got in zip(NUMBER.findall(documented), NUMBER.findall(produced), strict=True):
        assert float(got) == pytest.approx(float(shown), rel=rel, abs=1e-6), (shown, got)


def check_walkthrough_page(page: str, walkthrough: str, result: dict) -> None:
    """A walkthrough page's output blocks are a fresh run's (:func:`run_walkthrough_locally`): the
    ``Metrics:`` line, the metrics.jsonl rows it shows (wall-clock figures excepted) and summary.md."""
    import json

    outputs = f"examples/{walkthrough}/outputs/{result['config']['name']}"
    shown = documented_output(page, f"python examples/{walkthrough}/run.py examples/{walkthrough}/config.local.yaml")
    last = result["rows"][-1]["step"]
    final = {"train/mean_loss": next(r for r in reversed(result["rows"]) if r["split"] == "train")["metrics"]["train/mean_loss"]}
    final.update(next(r for r in reversed(result["rows"]) if r["split"] == "val" and r["step"] == last)["metrics"])
    same_text_and_numbers(shown[1], f"Metrics:   {final}")

    def comparable(row: dict) -> dict:  # wall-clock figures differ from machine to machine
        return {**row, "metrics": {k: v for k, v in row["metrics"].items() if not k.endswith(("_seconds", "_per_s"))}}

    command = next(c for c in (f"cat {outputs}/metrics.jsonl", f"head -3 {outputs}/metrics.jsonl") if _shows(page, c))
    documented_rows = [comparable(json.loads(line)) for line in documented_output(page, command)]
    fresh_rows = [comparable(row) for row in result["rows"]][: len(documented_rows)]
    same_text_and_numbers(json.dumps(documented_rows), json.dumps(fresh_rows))
    summary = documented_output(page, f"cat {outputs}/summary.md")
    same_text_and_numbers("\n".join(summary), (result["run_dir"] / "summary.md").read_text().rstrip("\n"))


def _shows(page: str, command: str) -> bool:
    try:
        documented_output(page, command)
    except AssertionError:
        return False
    return True


@pytest.fixture(scope="session")
def documented() -> object:
    """``output(page, command)``, ``same(documented_text, produced_text)`` and
    ``check_walkthrough(page, walkthrough, result)`` for tests that compare docs with fresh runs."""
    import types

    return types.SimpleNamespace(output=documented_output, same=same_text_and_numbers, check_walkthrough=check_walkthrough_page)
