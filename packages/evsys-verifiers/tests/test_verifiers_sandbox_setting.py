"""Which runner a verifier program gets: ``sandbox: auto | bwrap | none``, the environment, plugged runners."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator

import pytest

from evsys.schema.errors import EvsysError
from evsys.schema.rows import TaskRow
from evsys.verifiers import runner, sandbox
from evsys.verifiers.scoring import builtin_registry, verify

MISSING = "bubblewrap (bwrap) not found"


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(sandbox.SANDBOX_ENV, raising=False)
    monkeypatch.delenv(runner.RUNNER_ENV, raising=False)
    sandbox.set_sandbox(None)
    runner.set_runner(None)
    yield
    sandbox.set_sandbox(None)
    runner.set_runner(None)


@pytest.fixture
def no_bwrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "bwrap_problem", lambda: MISSING)
    monkeypatch.setattr(sandbox, "_WARNED", type(sandbox._WARNED)())


@pytest.fixture
def with_bwrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "bwrap_problem", lambda: None)


def _task(**verifier: object) -> TaskRow:
    spec = {"fn_name": "python_tests", "options": {"tests": "assert f() == 1"}, **verifier}
    return TaskRow.model_validate({"task_id": "t", "prompt": "p", "verifier": spec})


def test_auto_uses_bwrap_where_it_works(with_bwrap: None) -> None:
    assert sandbox.resolve_sandbox() == "bwrap"
    assert isinstance(runner.get_runner(), sandbox.BwrapRunner)


def test_auto_without_bwrap_warns_once_in_one_line(no_bwrap: None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="evsys.verifiers"):
        assert sandbox.resolve_sandbox() == "none"
        assert sandbox.resolve_sandbox("auto") == "none"
        assert type(runner.get_runner()) is runner.LocalRunner
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "\n" not in message
    assert message == (
        f"verifier programs (python_tests, subprocess checkers) run unsandboxed, with resource limits only: {MISSING}; "
        f"{sandbox.INSTALL_HINT}, or set {sandbox.SANDBOX_ENV}=none to accept this"
    )


def test_a_demand_for_bwrap_is_an_error_without_it(no_bwrap: None, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(sandbox.SandboxUnavailable, match=re.escape(f"sandbox 'bwrap' is required but {MISSING}:")):
        sandbox.resolve_sandbox("bwrap")
    monkeypatch.setenv(sandbox.SANDBOX_ENV, "bwrap")
    with pytest.raises(sandbox.SandboxUnavailable):
        runner.get_runner()
    # a task that demands it is never scored without it: the error stops scoring instead of scoring 0
    monkeypatch.delenv(sandbox.SANDBOX_ENV)
    with pytest.raises(sandbox.SandboxUnavailable):
        verify(
            "def f():\n    return 1\n", _task(sandbox="bwrap", options={"tests": "assert f() == 1"}), builtin_registry()
        )


def test_bwrap_anywhere_wins_then_none_then_auto(with_bwrap: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sandbox.SANDBOX_ENV, "none")
    assert sandbox.resolve_sandbox() == "none"
    assert sandbox.resolve_sandbox("auto") == "none"
    assert sandbox.resolve_sandbox("bwrap") == "bwrap"  # a task's demand beats the environment's none
    with sandbox.sandbox_setting("bwrap"):
        assert isinstance(runner.get_runner(), sandbox.BwrapRunner)
    monkeypatch.setenv(sandbox.SANDBOX_ENV, "bwrap")
    assert sandbox.resolve_sandbox("none") == "bwrap"  # a task cannot switch off a demanded sandbox
    sandbox.set_sandbox("none")  # evsys-verify --sandbox none beats the environment
    assert sandbox.resolve_sandbox() == "none"


def test_a_bad_setting_is_one_line_naming_where_it_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sandbox.SANDBOX_ENV, "docker")
    with pytest.raises(
        EvsysError, match=r"^EVSYS_VERIFIER_SANDBOX: unknown sandbox 'docker'; expected one of auto, bwrap, none$"
    ):
        sandbox.resolve_sandbox()
    with pytest.raises(Exception, match="sandbox"):
        _task(sandbox="docker")  # the schema rejects it in tasks.jsonl


def test_a_plugged_runner_is_used_unless_bwrap_is_demanded(with_bwrap: None) -> None:
    plugged = runner.LocalRunner()
    runner.set_runner(plugged)
    assert runner.get_runner() is plugged
    with sandbox.sandbox_setting("none"):
        assert runner.get_runner() is plugged
    with sandbox.sandbox_setting("bwrap"):
        assert isinstance(runner.get_runner(), sandbox.BwrapRunner)
    assert sandbox.describe_sandbox() == "runner evsys.verifiers.runner.LocalRunner (plugged in)"


def test_describe_names_the_runner(with_bwrap: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "bwrap_version", lambda: "bubblewrap 0.8.0")
    assert sandbox.describe_sandbox() == "bwrap (bubblewrap 0.8.0)"
    assert sandbox.describe_sandbox("none").startswith("none (sandbox: none;")
    monkeypatch.setattr(sandbox, "bwrap_problem", lambda: MISSING)
    assert sandbox.describe_sandbox().startswith(f"none ({MISSING}: programs run with resource limits only;")
    assert sandbox.describe_sandbox("bwrap") == f"bwrap required but {MISSING}"


@pytest.mark.skipif(sandbox.bwrap_problem() is not None, reason=f"needs bubblewrap: {sandbox.bwrap_problem()}")
def test_bwrap_runner_keeps_the_runner_contract() -> None:
    bwrap = sandbox.BwrapRunner()
    with pytest.raises(ValueError, match="leaves"):
        bwrap.run(["true"], files={"../escape.txt": "x"})
    result = bwrap.run(
        [sys.executable, "-c", "import os; print(open('sub/data.txt').read(), os.getcwd(), os.environ['EXTRA'])"],
        files={"sub/data.txt": "hello"},
        env={"EXTRA": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["hello", sandbox.WORKDIR, "1"]
    limited = bwrap.run(
        [sys.executable, "-c", "import resource; print(resource.getrlimit(resource.RLIMIT_NOFILE))"],
        limits=runner.Limits(open_files=40),
    )
    assert limited.stdout.strip() == "(40, 40)"


@pytest.mark.skipif(sandbox.bwrap_problem() is not None, reason=f"needs bubblewrap: {sandbox.bwrap_problem()}")
def test_the_program_has_no_privileges_and_sees_only_its_sandbox() -> None:
    import json
    import os

    source = (
        "import json, os\n"
        "status = dict(line.split(':', 1) for line in open('/proc/self/status').read().splitlines())\n"
        "print(json.dumps({'uid': os.getuid(), 'nnp': status['NoNewPrivs'].strip(), 'eff': status['CapEff'].strip(),"
        " 'etc': os.listdir('/etc'), 'pids': sorted(int(p) for p in os.listdir('/proc') if p.isdigit()), 'root': sorted(os.listdir('/')),"
        " 'net': sorted(os.listdir('/sys/class/net')) if os.path.isdir('/sys/class/net') else []}))\n"
    )
    result = runner.run_python(source, runner=sandbox.BwrapRunner())
    assert result.passed, result.stderr
    seen = json.loads(result.stdout.splitlines()[0])
    assert seen["uid"] != 0 and (os.geteuid() == 0 or seen["uid"] == os.geteuid())
    assert seen["nnp"] == "1" and int(seen["eff"], 16) == 0  # no capabilities, none to gain by exec
    assert max(seen["pids"]) < 10  # its own pid namespace: none of the host's processes
    assert {"home", "var", "sys", "mnt"}.isdisjoint(seen["root"])  # only the read-only binds and its /tmp
    assert seen["etc"] == ["ld.so.cache"]  # no passwd, no ssh keys, no credentials


def test_the_interpreter_is_bound_after_the_private_tmp() -> None:
    """An interpreter under /tmp (a CI checkout's venv) stays visible: its binds come after the tmpfs."""
    from evsys.verifiers.sandbox_pool import PooledBwrapRunner

    per_program = sandbox.BwrapRunner(bwrap="bwrap").command([sys.executable, "-c", "pass"], runner.Limits(), 5.0, [])
    pooled = PooledBwrapRunner(bwrap="bwrap")._command(sys.executable, None)
    for cmd in (per_program, pooled):
        tmpfs = cmd.index("--tmpfs")
        assert cmd[tmpfs + 1] == "/tmp"
        binds = [i for i, arg in enumerate(cmd) if arg == "--ro-bind"]
        assert binds and min(binds) > tmpfs, cmd
