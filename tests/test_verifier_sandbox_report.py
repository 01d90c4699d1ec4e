"""Where verifier programs run is reported: by ``validate --deep`` before a run, in ``summary.md`` after it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from evsys.cli.validate_cmd import validate_config
from evsys.logging.local import LocalLogger
from evsys.schema.protocols import RunContext
from evsys.verifiers import runner, sandbox
from evsys.verifiers.functions import python_tests

ROOT = Path(__file__).resolve().parents[1]
MISSING = "bubblewrap (bwrap) not found"


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(sandbox.SANDBOX_ENV, raising=False)
    monkeypatch.delenv(runner.RUNNER_ENV, raising=False)
    monkeypatch.setattr(sandbox, "bwrap_version", lambda: "bubblewrap 0.8.0")
    sandbox.set_sandbox(None)
    runner.set_runner(None)
    yield
    sandbox.set_sandbox(None)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The walkthrough's config, with a benchmark whose task runs a program (python_tests)."""
    shutil.copytree(ROOT / "examples" / "sdft_walkthrough", tmp_path / "examples" / "sdft_walkthrough")
    task = {
        "task_id": "double",
        "prompt": "def double(x):\n",
        "verifier": {"fn_name": "python_tests", "options": {"tests": "assert double(2) == 4"}},
    }
    (tmp_path / "examples" / "sdft_walkthrough" / "data" / "val" / "tasks.jsonl").write_text(json.dumps(task) + "\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "examples" / "sdft_walkthrough" / "config.yaml"


def test_validate_deep_names_the_sandbox(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "bwrap_problem", lambda: None)
    result = validate_config(project, deep=True)
    assert result.ok, [p.format() for p in result.problems]
    assert "; deep: 40 examples, 1 benchmark with 1 task" in result.summary()
    assert "; verifier programs: bwrap (bubblewrap 0.8.0)" in result.summary()


def test_validate_deep_warns_when_programs_would_run_unsandboxed(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "bwrap_problem", lambda: MISSING)
    result = validate_config(project, deep=True)
    assert result.ok
    assert [p.format() for p in result.warnings][-1].endswith(
        f"metadata.benchmark[0].path: warning: its verifier programs will run unsandboxed: {MISSING}; "
        f"{sandbox.INSTALL_HINT}"
    )
    assert "; verifier programs: none (bubblewrap (bwrap) not found: programs run with resource limits only;" in (
        result.summary()
    )
    monkeypatch.setenv(sandbox.SANDBOX_ENV, "bwrap")  # demanded: an error, before any run starts
    demanded = validate_config(project, deep=True)
    assert not demanded.ok
    assert demanded.errors[-1].message == (
        f"its verifier programs need the sandbox (EVSYS_VERIFIER_SANDBOX=bwrap) but {MISSING}: {sandbox.INSTALL_HINT}"
    )


def test_a_task_that_demands_bwrap_fails_validation_where_it_cannot_run(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sandbox, "bwrap_problem", lambda: MISSING)
    tasks = project.parent / "data" / "val" / "tasks.jsonl"
    row = json.loads(tasks.read_text())
    row["verifier"]["sandbox"] = "bwrap"
    tasks.write_text(json.dumps(row) + "\n")
    result = validate_config(project, deep=True)
    assert [p.format() for p in result.errors] == [
        f"{tasks.relative_to(project.parents[2]).as_posix()}:1: verifier.sandbox: sandbox 'bwrap' is required but "
        f"{MISSING}: {sandbox.INSTALL_HINT}"
    ]


def test_summary_names_where_the_runs_programs_ran(tmp_path: Path) -> None:
    config = SimpleNamespace(
        model=SimpleNamespace(name="tiny"),
        backend=SimpleNamespace(kind="local"),
        algorithm=SimpleNamespace(kind="grpo"),
    )
    context = RunContext("demo", tmp_path / "demo", tmp_path, config, max_steps=1)
    sandbox.set_sandbox("none")  # runs everywhere; the bwrap line is the same code path
    logger = LocalLogger()
    logger.on_run_start(context)
    assert python_tests("def double(x):\n    return 2 * x\n", "assert double(2) == 4", extract="none") == 1.0
    assert python_tests("def double(x):\n    return x\n", "assert double(2) == 4", extract="none") == 0.0
    logger.on_run_end("completed", {})
    summary = (tmp_path / "demo" / "summary.md").read_text()
    assert "Verifier programs: 2 in the plain runner, unsandboxed (resource limits only)\n" in summary
    quiet = LocalLogger()  # a run that ran no programs says nothing about them
    quiet.on_run_start(RunContext("quiet", tmp_path / "quiet", tmp_path, config, max_steps=1))
    quiet.on_run_end("completed", {})
    assert "Verifier programs" not in (tmp_path / "quiet" / "summary.md").read_text()
