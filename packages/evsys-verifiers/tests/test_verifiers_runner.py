"""The subprocess runner and adversarial programs for python_tests."""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from evsys.verifiers import runner, sandbox
from evsys.verifiers.functions import python_tests

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")

TIMEOUT = 1.0
TESTS = "def check(candidate):\n    assert candidate(2) == 4\n"
GOOD = "def double(x):\n    return 2 * x\n"

ADVERSARIAL = {
    "infinite_loop": GOOD + "while True:\n    pass\n",
    "fork_bomb": (
        # bounded: at most 2**5 = 32 processes, all sleeping, all in the run's process group
        "import os, time\n"
        + GOOD
        + "for _ in range(5):\n    try:\n        os.fork()\n    except OSError:\n        break\n"
        "time.sleep(60)\n"
    ),
    "memory_hog": GOOD + "blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 1024 * 1024))\n",
    "unbounded_output": GOOD + "while True:\n    print('x' * 10000)\n",
    "early_sys_exit": "import sys\n" + GOOD + "sys.exit(0)\n",
    "reads_stdin": GOOD + "input()\n",
    "os_exit": "import os\n" + GOOD + "os._exit(0)\n",
    "sleeps": "import time\n" + GOOD + "time.sleep(30)\n",
    "kill_parent_group_attempt": "import os, signal\n" + GOOD + "os.killpg(os.getpgid(0), signal.SIGTERM)\n",
}


@pytest.fixture(params=["none", "bwrap:per-program", "bwrap:pool"])
def each_runner(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Runs the test with the plain runner, then with bubblewrap, one per program and pooled (skipped where
    bubblewrap cannot run)."""
    setting, _, mode = request.param.partition(":")
    if setting == "bwrap" and sandbox.bwrap_problem() is not None:
        pytest.skip(f"needs bubblewrap: {sandbox.bwrap_problem()}")
    if mode:
        monkeypatch.setenv(sandbox.BWRAP_MODE_ENV, mode)
    sandbox.set_sandbox(setting)
    yield request.param
    sandbox.set_sandbox(None)


def _nothing_left(result: runner.RunResult) -> bool:
    """No process of the run is alive: its process group (a run of its own), else (pooled sandbox) nothing in
    any pooled sandbox but its supervisor (the first process under ``bwrap``)."""
    if result.pgid is not None:
        return runner.leftover_processes(result.pgid) == []
    from evsys.verifiers.sandbox_pool import PooledBwrapRunner

    def descendants(pid: int) -> list[int]:
        found = []
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                for child in map(int, handle.read().split()):
                    found += [child, *descendants(child)]
        return found

    def stat(pid: int) -> tuple[str, str]:
        with open(f"/proc/{pid}/stat") as handle:
            text = handle.read()
        return text[text.index("(") + 1 : text.rindex(")")], text.rsplit(")", 1)[1].split()[0]

    pools = [pool for pool in sandbox._RUNNERS.values() if isinstance(pool, PooledBwrapRunner)]
    assert pools
    for pool in pools:
        for box in (box for idle in pool._idle.values() for box in idle):
            _supervisor, *rest = [pid for pid in descendants(box.proc.pid) if stat(pid)[0] != "bwrap"]
            if any(stat(pid)[1] != "Z" for pid in rest):
                return False
    return True


def _run(source: str) -> tuple[runner.RunResult, float]:
    program = f"{source}\n\n{TESTS}\n\ncheck(double)\n"
    start = time.monotonic()
    result = runner.run_python(program, timeout=TIMEOUT, limits=runner.Limits(memory_bytes=512 << 20))
    return result, time.monotonic() - start


def test_a_good_program_passes(each_runner: str) -> None:
    result, _ = _run(GOOD)
    assert result.passed, result.stderr
    assert _nothing_left(result)


def test_adversarial_programs_fail_in_time_and_leave_nothing_running(each_runner: str) -> None:
    with ThreadPoolExecutor(max_workers=len(ADVERSARIAL)) as pool:
        results = dict(zip(ADVERSARIAL, pool.map(_run, ADVERSARIAL.values()), strict=True))
    for name, (result, elapsed) in results.items():
        assert not result.passed, name
        assert elapsed < TIMEOUT + 1.0, (name, elapsed)
        assert _nothing_left(result), name
    assert results["infinite_loop"][0].timed_out
    assert results["unbounded_output"][0].output_exceeded
    assert results["early_sys_exit"][0].returncode == 0 and results["early_sys_exit"][0].token_seen is False
    assert results["os_exit"][0].returncode == 0 and results["os_exit"][0].token_seen is False
    assert "MemoryError" in results["memory_hog"][0].stderr or results["memory_hog"][0].returncode != 0
    assert "EOFError" in results["reads_stdin"][0].stderr


def test_children_left_behind_by_a_passing_program_are_killed(each_runner: str) -> None:
    # the program passes, but leaves children holding its output open: the run still ends at once
    source = (
        "import os, time\n"
        + GOOD
        + "for _ in range(3):\n    if os.fork() == 0:\n        time.sleep(60)\n        os._exit(0)\n"
    )
    result, elapsed = _run(source)
    assert result.passed
    assert elapsed < TIMEOUT
    assert _nothing_left(result)


def test_python_tests_scores_adversarial_programs_zero(each_runner: str) -> None:
    for name in ("early_sys_exit", "os_exit", "reads_stdin", "unbounded_output"):
        score = python_tests(ADVERSARIAL[name], TESTS, entry_point="double", timeout=TIMEOUT, extract="none")
        assert score == 0.0, name


def test_environment_is_minimal_and_cwd_is_a_fresh_home(monkeypatch: pytest.MonkeyPatch, each_runner: str) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    monkeypatch.setenv("HF_TOKEN", "do-not-leak")
    source = (
        "import os, json, sys\n"
        "print(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd(), 'files': os.listdir('.'),"
        " 'stdin': sys.stdin.read()}))\n"
    )
    result = runner.run_python(source, timeout=5)
    assert result.passed, result.stderr
    import json

    info = json.loads(result.stdout.splitlines()[0])
    assert "do-not-leak" not in json.dumps(info["env"])
    assert info["env"]["HOME"] == info["cwd"] == info["env"]["TMPDIR"]
    assert info["files"] == ["program.py"]
    assert info["stdin"] == ""
    assert not os.path.exists(info["cwd"])  # removed after the run


def test_file_size_and_open_file_limits(each_runner: str) -> None:
    big = runner.run_python(
        "open('big', 'wb').write(b'x' * (4 << 20))", timeout=5, limits=runner.Limits(file_size_bytes=1 << 20)
    )
    assert not big.passed
    fds = runner.run_python(
        "fs = [open('f%d' % i, 'w') for i in range(100)]", timeout=5, limits=runner.Limits(open_files=32)
    )
    assert not fds.passed and "Too many open files" in fds.stderr


def test_cpu_limit_kills_a_busy_program_even_without_the_wall_clock(each_runner: str) -> None:
    result = runner.run_python("while True: pass", timeout=30, limits=runner.Limits(cpu_seconds=1))
    assert not result.passed and not result.timed_out and result.returncode != 0
    assert result.duration < 5


def test_python_launcher_fallback_applies_limits() -> None:
    local = runner.LocalRunner(prlimit=None)
    result = local.run(
        [sys.executable, "-c", "import resource; print(resource.getrlimit(resource.RLIMIT_NOFILE))"],
        timeout=10,
        limits=runner.Limits(open_files=40),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(40, 40)"


def test_run_command_rejects_files_outside_the_directory() -> None:
    with pytest.raises(ValueError, match="leaves"):
        runner.run_command(["true"], files={"../escape.txt": "x"})


class _RecordingRunner:
    def __init__(self) -> None:
        self.calls: list[Any] = []

    def run(self, argv, *, files=None, timeout=10.0, limits=None, max_output=runner.DEFAULT_MAX_OUTPUT, env=None):  # type: ignore[no-untyped-def]
        self.calls.append((list(argv), dict(files or {})))
        return runner.LocalRunner().run(
            argv, files=files, timeout=timeout, limits=limits, max_output=max_output, env=env
        )


def test_a_stronger_runner_can_be_plugged_in() -> None:
    recording = _RecordingRunner()
    assert isinstance(recording, runner.Runner)
    runner.set_runner(recording)
    try:
        assert python_tests(GOOD, TESTS, entry_point="double") == 1.0
    finally:
        runner.set_runner(None)
    assert len(recording.calls) == 1 and "program.py" in recording.calls[0][1]


def test_runner_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(runner.RUNNER_ENV, "evsys.verifiers.runner:LocalRunner")
    runner.set_runner(None)
    try:
        assert isinstance(runner.get_runner(), runner.LocalRunner)
    finally:
        runner.set_runner(None)
