"""The runners that ``python_tests`` and the ``subprocess`` verifier kind use.

:class:`LocalRunner`, the plain runner: each run gets a fresh temporary directory as its working
directory and ``HOME``, a minimal environment (``PATH``, ``HOME``, ``TMPDIR``, ``LANG`` — no
credentials, no proxy settings), stdin from ``/dev/null``, a process group of its own that is killed
(SIGKILL) at the end, resource limits (CPU seconds, address space, file size, open files,
optionally processes), a wall-clock timeout enforced by the parent, and bounded output (a run that
prints more is killed).

**The plain runner is not a security sandbox.** The child runs as the same user, sees the same file
system and network, and a program that calls ``setsid()`` or double-forks out of its process group
can outlive the run. Where bubblewrap works, programs run in
:class:`~evsys.verifiers.sandbox.BwrapRunner` instead (``sandbox: auto | bwrap | none``, see
:mod:`evsys.verifiers.sandbox`). Another runner (a container, nsjail, gVisor, a remote executor)
plugs in with :func:`set_runner` or ``EVSYS_VERIFIER_RUNNER="module:factory"``: any object with the
:class:`Runner` ``run`` method.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast, runtime_checkable

from evsys.verifiers.output_pump import pump_output

__all__ = [
    "DEFAULT_MAX_OUTPUT",
    "Limits",
    "LocalRunner",
    "RunResult",
    "Runner",
    "get_runner",
    "leftover_processes",
    "minimal_env",
    "plugged_runner",
    "run_command",
    "run_python",
    "set_runner",
]

DEFAULT_MAX_OUTPUT = 1 << 20  # bytes of stdout + stderr before the run is killed
RUNNER_ENV = "EVSYS_VERIFIER_RUNNER"


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run (``None``: not limited). ``cpu_seconds`` defaults to the timeout + 1."""

    cpu_seconds: int | None = None
    memory_bytes: int | None = 1 << 30
    file_size_bytes: int | None = 16 << 20
    open_files: int | None = 64
    processes: int | None = None
    disk_bytes: int | None = 128 << 20  # the sandbox's private /tmp (the plain runner cannot cap a total)


@dataclass
class RunResult:
    """What a run did. ``passed`` needs exit status 0, no timeout, no output overflow and, when the
    caller asked for a token, the token printed."""

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool = False
    output_exceeded: bool = False
    duration: float = 0.0
    pgid: int | None = None
    token_seen: bool | None = None

    @property
    def passed(self) -> bool:
        """Whether the run counts as a pass."""
        return self.returncode == 0 and not self.timed_out and not self.output_exceeded and self.token_seen is not False

    def reason(self) -> str:
        """A short description of why the run failed (``"passed"`` when it did not)."""
        if self.timed_out:
            return f"timed out after {self.duration:.1f}s"
        if self.output_exceeded:
            return "output limit exceeded"
        if self.returncode != 0:
            return f"exit status {self.returncode}"
        if self.token_seen is False:
            return "exited before the tests finished (no completion token)"
        return "passed"


@runtime_checkable
class Runner(Protocol):
    """Runs a program in isolation; implement it to plug in a stronger sandbox."""

    def run(
        self,
        argv: Sequence[str],
        *,
        files: Mapping[str, str | bytes] | None = None,
        timeout: float = 10.0,
        limits: Limits | None = None,
        max_output: int = DEFAULT_MAX_OUTPUT,
        env: Mapping[str, str] | None = None,
    ) -> RunResult:
        """Run ``argv`` in a fresh directory holding ``files`` and report what happened."""
        ...


def minimal_env(home: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a child gets: nothing from the parent's but what a program needs to start,
    then the run's own ``extra`` variables."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": home,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONHASHSEED": "0",
        **(extra or {}),
    }


_LAUNCHER = (
    "import os,resource,sys,json\n"
    "for n,(s,h) in json.loads(sys.argv[1]).items():\n"
    "    resource.setrlimit(getattr(resource,n),(s,h))\n"
    "os.execvp(sys.argv[2],sys.argv[2:])\n"
)
_PRLIMIT_NAMES = {
    "RLIMIT_CPU": "cpu",
    "RLIMIT_AS": "as",
    "RLIMIT_FSIZE": "fsize",
    "RLIMIT_NOFILE": "nofile",
    "RLIMIT_NPROC": "nproc",
    "RLIMIT_MSGQUEUE": "msgqueue",
    "RLIMIT_CORE": "core",
}


def limited_argv(argv: Sequence[str], rlimits: Mapping[str, tuple[int, int]], prlimit: str | None) -> list[str]:
    """``argv`` started under ``rlimits`` (``{"RLIMIT_AS": (soft, hard), ...}``): through util-linux's
    ``prlimit`` where there is one, else through a small Python launcher that sets them and execs."""
    if not rlimits:
        return list(argv)
    if prlimit:
        flags = [f"--{_PRLIMIT_NAMES[name]}={soft}:{hard}" for name, (soft, hard) in rlimits.items()]
        return [prlimit, *flags, "--", *argv]
    return [sys.executable, "-S", "-E", "-s", "-c", _LAUNCHER, json.dumps(dict(rlimits)), *argv]


def _rlimits(limits: Limits, timeout: float) -> dict[str, tuple[int, int]]:
    cpu = limits.cpu_seconds if limits.cpu_seconds is not None else math.ceil(timeout) + 1
    wanted = {
        "RLIMIT_CPU": (cpu, cpu + 1),
        "RLIMIT_AS": limits.memory_bytes,
        "RLIMIT_FSIZE": limits.file_size_bytes,
        "RLIMIT_NOFILE": limits.open_files,
        "RLIMIT_NPROC": limits.processes,
    }
    result: dict[str, tuple[int, int]] = {}
    for name, value in wanted.items():
        if value is None or not hasattr(resource, name):
            continue
        soft, hard = value if isinstance(value, tuple) else (value, value)
        current_hard = resource.getrlimit(getattr(resource, name))[1]
        if current_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, current_hard), min(hard, current_hard)
        result[name] = (int(soft), int(hard))
    return result


def leftover_processes(pgid: int) -> list[int]:
    """Live (non-zombie) processes still in process group ``pgid`` (Linux ``/proc``; else [])."""
    found = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(entry.name))
    return found


def _has_exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether the child has exited, without reaping it (so its pid keeps naming the group)."""
    if proc.returncode is not None:
        return True
    waitid = getattr(os, "waitid", None)
    if waitid is None:
        return proc.poll() is not None
    try:
        info = waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _wait_group_gone(pgid: int, grace: float = 1.0) -> None:
    """Wait (briefly) until every process of the killed group has died; SIGKILL is asynchronous.

    Killed orphans stay zombies until init reaps them; they are dead, so they do not count.
    """
    deadline = time.monotonic() + grace
    delay = 0.001
    while True:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        if not leftover_processes(pgid):  # only zombies left, waiting for init to reap them
            return
        if time.monotonic() >= deadline:
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
        _kill_group(pgid)


class LocalRunner:
    """The default runner: a child process under resource limits, on this machine (not a sandbox)."""

    def __init__(self, prlimit: str | None = "auto") -> None:
        self.prlimit = shutil.which("prlimit") if prlimit == "auto" else prlimit

    def _wrap(self, argv: Sequence[str], limits: Limits, timeout: float) -> list[str]:
        return limited_argv(argv, _rlimits(limits, timeout), self.prlimit)

    def run(
        self,
        argv: Sequence[str],
        *,
        files: Mapping[str, str | bytes] | None = None,
        timeout: float = 10.0,
        limits: Limits | None = None,
        max_output: int = DEFAULT_MAX_OUTPUT,
        env: Mapping[str, str] | None = None,
    ) -> RunResult:
        """Run ``argv`` in a fresh temporary directory holding ``files``; see the module docs."""
        limits = limits or Limits()
        workdir = tempfile.mkdtemp(prefix="evsys-run-")
        try:
            for name, content in (files or {}).items():
                target = Path(workdir, name).resolve()
                if not str(target).startswith(os.path.realpath(workdir) + os.sep):
                    raise ValueError(f"file name {name!r} leaves the run directory")
                target.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, bytes):
                    target.write_bytes(content)
                else:
                    target.write_text(content, encoding="utf-8")
            return self._run(self._wrap(argv, limits, timeout), workdir, minimal_env(workdir, env), timeout, max_output)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _run(
        self,
        cmd: list[str],
        cwd: str | None,
        env: dict[str, str],
        timeout: float,
        max_output: int,
        pass_fds: tuple[int, ...] = (),
    ) -> RunResult:
        start = time.monotonic()
        deadline = start + timeout
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
            pass_fds=pass_fds,
        )
        pgid = proc.pid
        assert proc.stdout is not None and proc.stderr is not None
        try:
            out, err, timed_out, exceeded = pump_output(
                proc.stdout.fileno(),
                proc.stderr.fileno(),
                deadline=deadline,
                max_output=max_output,
                exited=lambda: _has_exited(proc),
            )
        finally:
            _kill_group(pgid)
            proc.wait()
            _wait_group_gone(pgid)
            proc.stdout.close()
            proc.stderr.close()
        duration = time.monotonic() - start
        stdout = out[:max_output].decode("utf-8", "replace")
        stderr = err[:max_output].decode("utf-8", "replace")
        return RunResult(
            returncode=proc.returncode,
            stdout=stdout,
            stderr=stderr,
            timed_out=timed_out,
            output_exceeded=exceeded,
            duration=duration,
            pgid=pgid,
        )


_RUNNER: Runner | None = None


def set_runner(runner: Runner | None) -> None:
    """Use ``runner`` for every run from now on (``None``: back to the default)."""
    global _RUNNER
    _RUNNER = runner


def plugged_runner() -> Runner | None:
    """The runner plugged in with :func:`set_runner` or ``$EVSYS_VERIFIER_RUNNER`` (``None``: none is)."""
    global _RUNNER
    if _RUNNER is None:
        target = os.environ.get(RUNNER_ENV, "").strip()
        if target:
            from evsys.schema.registry import load_object

            factory = load_object(target)
            _RUNNER = factory() if isinstance(factory, type) or not hasattr(factory, "run") else factory
    return _RUNNER


def get_runner() -> Runner:
    """The runner for the next program: the plugged-in one (:func:`plugged_runner`) unless the sandbox
    is demanded, else bubblewrap or :class:`LocalRunner` by the sandbox setting (see :mod:`evsys.verifiers.sandbox`)."""
    from evsys.verifiers.sandbox import select_runner

    return cast(Runner, select_runner(plugged_runner()))


def run_command(
    argv: Sequence[str],
    *,
    files: Mapping[str, str | bytes] | None = None,
    timeout: float = 10.0,
    limits: Limits | None = None,
    max_output: int = DEFAULT_MAX_OUTPUT,
    env: Mapping[str, str] | None = None,
    runner: Runner | None = None,
) -> RunResult:
    """Run a program with the runner in use (see :func:`get_runner`)."""
    return (runner or get_runner()).run(
        argv, files=files, timeout=timeout, limits=limits, max_output=max_output, env=env
    )


def run_python(
    source: str,
    *,
    timeout: float = 10.0,
    limits: Limits | None = None,
    python: str | None = None,
    files: Mapping[str, str | bytes] | None = None,
    max_output: int = DEFAULT_MAX_OUTPUT,
    runner: Runner | None = None,
) -> RunResult:
    """Run Python ``source`` as ``program.py``; it passes only if it exits 0 after printing a random
    per-run token appended after ``source``, so an early ``sys.exit(0)`` or ``os._exit(0)`` fails.

    The token defends against programs that stop early, not against code that reads its own file.
    """
    token = secrets.token_hex(16)
    program = f"{source}\n\nprint({token!r}, flush=True)\n"
    interpreter = python or sys.executable or shutil.which("python3") or "python3"
    all_files: dict[str, str | bytes] = dict(files or {})
    all_files["program.py"] = program
    result = run_command(
        [interpreter, "-E", "-s", "program.py"],
        files=all_files,
        timeout=timeout,
        limits=limits,
        max_output=max_output,
        runner=runner,
    )
    result.token_seen = token in result.stdout
    return result
