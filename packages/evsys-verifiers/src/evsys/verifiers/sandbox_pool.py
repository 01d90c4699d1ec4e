"""The pooled bubblewrap runner: one long-lived sandbox per worker, each program isolated within it.

:class:`PooledBwrapRunner` keeps the containment of :class:`~evsys.verifiers.sandbox.BwrapRunner`
(the same namespaces, read-only binds, private size-capped ``/tmp`` and ``/dev``, no network, no
capability, the same limits through ``prlimit``, plus ``RLIMIT_MSGQUEUE=0``: no POSIX message queues,
and no core files) but pays the ``bwrap`` start once per worker instead of once per program.

Inside each sandbox a small supervisor (:data:`SUPERVISOR`) is pid 1 of the sandbox's pid namespace
(``--as-pid-1``). It runs with the programs' uid and no capability: as an ordinary user, your uid in the
sandbox's user namespace (bubblewrap maps that one only); as root, a fresh random uid/gid per sandbox,
no groups, to which it switches before it serves (a user namespace would leave programs root on the
host). It runs one program at a time in ``/tmp/work`` holding the run's files, in a session of its own,
collects its output (bounded) until it exits or the timeout, then ``kill(-1, SIGKILL)`` (every process
of the sandbox but itself, atomic against ``fork``) and reaps until none is left, answers, and removes
everything the run left: the files in ``/tmp`` (the only place a program can write; ``/`` and ``/dev``
are read-only or root's), the SysV IPC objects and the keys in the uid's keyrings. A program cannot
reach the supervisor: the kernel drops every signal a process of the namespace sends its init unless
the init handles it (it handles none), and the supervisor is not dumpable (no ``ptrace``, no
``/proc/1/environ``, ``mem`` or ``fd``).

So nothing of one run survives into the next (no file, process, socket, IPC object or key). A sandbox
is replaced when its supervisor dies (it exits rather than serve a sandbox it could not clean) or after
:data:`RUNS_PER_SANDBOX` programs; it exits when the scorer does (its control pipe closes).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import selectors
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from evsys.verifiers.runner import DEFAULT_MAX_OUTPUT, Limits, RunResult, _rlimits, limited_argv, minimal_env
from evsys.verifiers.sandbox import _UID_BASE, WORKDIR, BwrapRunner, _binds, sandbox_limits, sandbox_path

__all__ = ["RUNS_PER_SANDBOX", "SUPERVISOR", "PooledBwrapRunner", "pool_problem"]

RUNS_PER_SANDBOX = 500
SUPERVISOR_CAPS = ("CAP_SETUID", "CAP_SETGID")  # as root: to switch to the sandbox's uid, which drops them
_HEADER = struct.Struct("!I")

SUPERVISOR = (Path(__file__).parent / "output_pump.py").read_text(encoding="utf-8") + (
    Path(__file__).parent / "sandbox_supervisor.py"
).read_text(encoding="utf-8").replace("from __future__ import annotations\n", "", 1)
"""The supervisor's source: :mod:`evsys.verifiers.output_pump` (standard library only) ahead of
``sandbox_supervisor.py``, which runs inside the sandbox where evsys cannot be imported."""


def _merged_binds(first: Sequence[str], second: Sequence[str]) -> tuple[str, ...]:
    """Two :func:`_binds` argument lists as one, each operation once."""
    ops: list[tuple[str, ...]] = []
    for op in (*_bind_ops(first), *_bind_ops(second)):
        if op not in ops:
            ops.append(op)
    return tuple(arg for op in ops for arg in op)


def _bind_ops(binds: Sequence[str]) -> list[tuple[str, ...]]:
    """:func:`_binds`'s arguments as operations: ``(--perms, M, --dir, P)``, ``(--ro-bind, S, D)``, ``(--symlink, T, P)``."""
    ops: list[tuple[str, ...]] = []
    i = 0
    while i < len(binds):
        width = 4 if binds[i] == "--perms" else 3
        ops.append(tuple(binds[i : i + width]))
        i += width
    return ops


class _SupervisorDied(RuntimeError):
    """The sandbox's supervisor stopped answering (``unsent``: before it took the request or answered a byte)."""

    def __init__(self, message: str, unsent: bool = False) -> None:
        super().__init__(message)
        self.unsent = unsent


class _Sandbox:
    """One long-lived ``bwrap`` running :data:`SUPERVISOR`, talking length-prefixed JSON over its stdin/stdout."""

    def __init__(self, cmd: list[str]) -> None:
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=minimal_env("/"),  # the supervisor never holds the scorer's environment (its secrets)
                start_new_session=True,
            )
        except OSError as exc:
            raise _SupervisorDied(f"bwrap cannot start: {exc}") from exc
        self.runs = 0
        ready = self._read(30.0)
        if not ready.get("ready"):
            raise _SupervisorDied(f"the sandbox did not start: {ready}")

    def _read(self, timeout: float) -> dict[str, object]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        buffer = b""
        need = _HEADER.size
        header_done = False
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while len(buffer) < need:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    raise _SupervisorDied("the sandbox's supervisor did not answer in time")
                chunk = os.read(fd, max(need - len(buffer), 65536) if header_done else need - len(buffer))
                if not chunk:  # it ended (no program can signal it: it is the sandbox's init), so try once more
                    raise _SupervisorDied(f"the sandbox's supervisor exited: {self._stderr()}", unsent=not buffer)
                buffer += chunk
                if not header_done and len(buffer) >= _HEADER.size:
                    need = _HEADER.size + _HEADER.unpack(buffer[: _HEADER.size])[0]
                    header_done = True
        return json.loads(buffer[_HEADER.size :])

    def _stderr(self) -> str:
        self.close()
        assert self.proc.stderr is not None
        lines = [line for line in self.proc.stderr.read().decode("utf-8", "replace").splitlines() if line.strip()]
        return lines[-1] if lines else f"exit status {self.proc.returncode}"

    def call(self, request: dict[str, object], timeout: float) -> dict[str, object]:
        """Send one run and wait (at most ``timeout``) for its answer."""
        data = json.dumps(request).encode()
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(_HEADER.pack(len(data)) + data)
            self.proc.stdin.flush()
        except OSError as exc:
            raise _SupervisorDied(f"the sandbox's supervisor is gone: {exc}", unsent=True) from exc
        self.runs += 1
        return self._read(timeout)

    def close(self) -> None:
        """Stop the sandbox (its supervisor exits on EOF; bubblewrap kills what is left)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):  # stdin's unsent request, where the supervisor is gone
                    stream.close()


class PooledBwrapRunner(BwrapRunner):
    """Runs each program in a pooled bubblewrap sandbox: as root under the sandbox's fresh uid, else as the user
    (see the module docs)."""

    def __init__(self, bwrap: str | None = None) -> None:
        super().__init__(bwrap)
        self._pid = os.getpid()
        self._idle: dict[tuple[str, int | None], list[_Sandbox]] = {}
        self._lock = threading.Lock()

    def _command(self, argv0: str, disk: int | None) -> list[str]:
        binds = _merged_binds(_binds(sys.executable), _binds(argv0))
        if self.as_root:  # no user namespace (see the module docs): the supervisor switches to a fresh uid
            namespaces = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
            caps = [arg for cap in SUPERVISOR_CAPS for arg in ("--cap-add", cap)]
            uid: int | None = _UID_BASE + secrets.randbelow(1_000_000)
        else:
            namespaces, caps, uid = ["--unshare-all"], [], None
        cmd = [self.bwrap, *namespaces, "--as-pid-1", "--new-session", "--dev", "/dev", "--proc", "/proc"]
        cmd += ["--perms", "1777", *(["--size", str(disk)] if disk else []), "--tmpfs", "/tmp"]
        # after the private /tmp, so an interpreter under /tmp (a venv there) stays visible
        cmd += [*binds, "--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/", *caps, "--"]
        return [*cmd, sys.executable, "-S", "-E", "-s", "-c", SUPERVISOR, json.dumps({"uid": uid})]

    def _take(self, key: tuple[str, int | None]) -> _Sandbox:
        with self._lock:
            if self._pid != os.getpid():  # a forked scorer: the parent's sandboxes answer the parent only
                self._idle, self._pid = {}, os.getpid()
            idle = self._idle.setdefault(key, [])
            while idle:
                box = idle.pop()
                if box.proc.poll() is None:
                    return box
                box.close()
        return _Sandbox(self._command(*key))

    def _give(self, key: tuple[str, int | None], box: _Sandbox) -> None:
        if box.runs >= RUNS_PER_SANDBOX or box.proc.poll() is not None:
            box.close()
            return
        with self._lock:
            self._idle.setdefault(key, []).append(box)

    def close(self) -> None:
        """Stop every idle sandbox."""
        with self._lock:
            boxes = [box for idle in self._idle.values() for box in idle]
            self._idle.clear()
        for box in boxes:
            box.close()

    def _rlimits(self, limits: Limits, timeout: float) -> dict[str, tuple[int, int]]:
        """The run's resource limits, plus no POSIX message queues and no core files; the process cap
        counts the supervisor too (it has the programs' uid), so it is one more."""
        rlimits = {**_rlimits(limits, timeout), "RLIMIT_MSGQUEUE": (0, 0), "RLIMIT_CORE": (0, 0)}
        if "RLIMIT_NPROC" in rlimits:
            soft, hard = rlimits["RLIMIT_NPROC"]
            rlimits["RLIMIT_NPROC"] = (soft + 1, hard + 1)
        return rlimits

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
        """Run ``argv`` in a pooled sandbox, in ``/tmp/work`` holding ``files``; see the module docs."""
        limits = sandbox_limits(limits)
        encoded = []
        for name, content in (files or {}).items():
            target = sandbox_path(name)
            data = content if isinstance(content, bytes) else content.encode("utf-8")
            encoded.append([str(target.relative_to(WORKDIR)), data.hex()])
        child_env = minimal_env(WORKDIR, env)
        request = {
            "argv": limited_argv(argv, self._rlimits(limits, timeout), self.prlimit),
            "files": encoded,
            "env": child_env,
            "timeout": timeout,
            "max_output": max_output,
        }
        key = (argv[0], limits.disk_bytes)
        start = time.monotonic()
        reply: dict[str, object] = {}
        for attempt in range(2):
            box: _Sandbox | None = None
            try:
                box = self._take(key)
                reply = box.call(request, timeout + 15.0)
            except _SupervisorDied as exc:
                if box is not None:
                    box.close()
                if exc.unsent and attempt == 0:
                    continue  # a sandbox that had ended while idle: the request goes to a fresh one, once
                return RunResult(None, "", f"evsys sandbox: {exc}", duration=time.monotonic() - start)
            self._give(key, box)
            break
        if "error" in reply:
            return RunResult(None, "", f"evsys sandbox: {reply['error']}", duration=time.monotonic() - start)
        stdout = bytes.fromhex(str(reply["stdout"]))[:max_output].decode("utf-8", "replace")
        stderr = bytes.fromhex(str(reply["stderr"]))[:max_output].decode("utf-8", "replace")
        return RunResult(
            returncode=reply["returncode"],  # type: ignore[arg-type]
            stdout=stdout,
            stderr=stderr,
            timed_out=bool(reply["timed_out"]),
            output_exceeded=bool(reply["exceeded"]),
            duration=time.monotonic() - start,
        )


@functools.lru_cache(maxsize=1)
def pool_problem() -> str | None:
    """Why the pooled sandbox cannot run programs here (``None``: it can); found out once by a trial run."""
    probe = PooledBwrapRunner()
    try:
        result = probe.run([sys.executable, "-S", "-E", "-c", "pass"], timeout=30)
    finally:
        probe.close()
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else f"exit status {result.returncode}"
    return None
