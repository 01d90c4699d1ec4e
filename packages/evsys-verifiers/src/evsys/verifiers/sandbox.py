"""The bubblewrap runner, and which runner a verifier program gets (``sandbox: auto | bwrap | none``).

:class:`BwrapRunner` runs each program with `bubblewrap <https://github.com/containers/bubblewrap>`_
(``bwrap``, the Flatpak sandbox) on top of :class:`~evsys.verifiers.runner.LocalRunner`'s limits:

- new pid, network, IPC, UTS and cgroup namespaces (``--unshare-all``), ``--die-with-parent`` and
  ``--new-session``: no network at all, no process outlives the run, no signal reaches the parent;
- a root of its own holding only read-only binds of what the interpreter needs (``/usr`` and the
  ``/bin``, ``/lib`` links, the running Python's prefix, base prefix and venv), a fresh ``/proc``
  that shows only the sandbox's processes, a minimal ``/dev``;
- a private ``/tmp`` (a size-capped tmpfs, :attr:`Limits.disk_bytes`) holding the working
  directory ``/tmp/work`` with the run's files: nothing is written to the host's disk;
- the resource limits (CPU, address space, file size, open files and processes) applied inside the
  sandbox, so the process cap counts only the sandbox's processes.

Run as root, a user namespace would map the program to root on the host, which ignores
``RLIMIT_NPROC`` and owns the host's files; so as root the runner unshares every namespace but the
user one and the program runs as a fresh unprivileged uid with no capabilities (``setpriv``).

By default programs run in :class:`~evsys.verifiers.sandbox_pool.PooledBwrapRunner`: the same
sandbox, one long-lived per worker, whose supervisor is its pid 1 and runs one program at a time under
the sandbox's uid (a fresh one as root, yours as an ordinary user), nothing of a run left for the next
(see :mod:`evsys.verifiers.sandbox_pool`); ``EVSYS_VERIFIER_BWRAP=per-program`` asks for one ``bwrap`` per
program (:class:`BwrapRunner`).

Which runner runs a program: a runner plugged in with :func:`~evsys.verifiers.runner.set_runner` or
``EVSYS_VERIFIER_RUNNER``, else by the sandbox setting — a task's ``verifier.sandbox``, the
process's (``evsys-verify --sandbox``, :func:`set_sandbox`, else ``EVSYS_VERIFIER_SANDBOX``).
``bwrap`` anywhere demands the sandbox (it wins over everything, and it is an error when bubblewrap
cannot run); else ``none`` anywhere runs the plain runner; else (``auto``) bubblewrap where it works,
and the plain runner with a one-line warning, once, where it does not.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
import secrets
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath

from evsys.schema.errors import EvsysError
from evsys.verifiers.runner import DEFAULT_MAX_OUTPUT, Limits, LocalRunner, RunResult, minimal_env

__all__ = [
    "BWRAP_MODES",
    "BWRAP_MODE_ENV",
    "SANDBOX_CHOICES",
    "SANDBOX_ENV",
    "BwrapRunner",
    "SandboxUnavailable",
    "bwrap_mode",
    "bwrap_problem",
    "describe_sandbox",
    "program_counts",
    "programs_line",
    "resolve_sandbox",
    "sandbox_limits",
    "sandbox_path",
    "sandbox_setting",
    "select_runner",
    "set_sandbox",
]

SANDBOX_ENV = "EVSYS_VERIFIER_SANDBOX"
SANDBOX_CHOICES = ("auto", "bwrap", "none")
BWRAP_MODE_ENV = "EVSYS_VERIFIER_BWRAP"
BWRAP_MODES = ("pool", "per-program")
WORKDIR = "/tmp/work"
DEFAULT_PROCESSES = 256  # processes (threads count too) inside one sandbox when Limits.processes is unset
INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap)"
_UID_BASE = 1_900_000_000  # root: each run gets an unused uid from here (no files, no processes of its own)
LD_CACHE = "/etc/ld.so.cache"
_MERGED_LINKS = ("bin", "lib", "lib32", "lib64", "libx32", "sbin")

logger = logging.getLogger("evsys.verifiers")


class SandboxUnavailable(EvsysError):
    """The sandbox was demanded (``sandbox: bwrap``) but bubblewrap cannot run here."""


def _prefixes(executable: str) -> tuple[str, ...]:
    """The directories a Python interpreter needs: its venv, prefix and base prefix (asked once)."""
    real = os.path.realpath(executable)
    if real == os.path.realpath(sys.executable) or executable == sys.executable:
        found = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    elif os.path.basename(real).startswith("python"):
        query = "import sys; print(sys.prefix); print(sys.base_prefix); print(sys.base_exec_prefix)"
        try:
            out = subprocess.run(
                [executable, "-S", "-E", "-c", query], capture_output=True, text=True, timeout=30, check=True
            ).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        found = {line for line in out.splitlines() if line.startswith("/")} or {str(Path(real).parent.parent)}
    else:
        found = {str(Path(real).parent)}
    return tuple(sorted(found))


@functools.lru_cache(maxsize=64)
def _binds(argv0: str) -> tuple[str, ...]:
    """``bwrap`` arguments binding, read-only, what ``argv0`` needs: /usr and the interpreter's directories
    (worked out once per program name)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for name in _MERGED_LINKS:
        path = Path("/", name)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    if os.path.isfile(LD_CACHE):  # the loader's index of /usr's libraries: without it each start probes paths (+10 ms)
        args += ["--perms", "0755", "--dir", "/etc", "--ro-bind", LD_CACHE, LD_CACHE]
    executable = argv0 if os.sep in argv0 else (shutil.which(argv0, path=minimal_env("/")["PATH"]) or argv0)
    roots: list[str] = []
    for prefix in (*_prefixes(executable), os.path.dirname(os.path.realpath(executable))):
        real = os.path.realpath(prefix)
        if not os.path.isdir(real) or real == "/" or PurePosixPath(real).is_relative_to("/usr"):
            continue
        if any(PurePosixPath(real).is_relative_to(done) for done in roots):
            continue
        roots = [done for done in roots if not PurePosixPath(done).is_relative_to(real)] + [real]
    made: set[str] = set()
    for root in sorted(roots):
        for parent in reversed(PurePosixPath(root).parents[:-1]):  # bwrap would make them 0700 as root
            if str(parent) not in made:
                made.add(str(parent))
                args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", root, root]
        for alias in {p for p in _prefixes(executable) if os.path.realpath(p) == root and p != root}:
            args += ["--symlink", root, alias]  # a venv reached through a symlinked path
    return tuple(args)


class BwrapRunner(LocalRunner):
    """Runs each program inside bubblewrap (see the module docs); the limits of :class:`LocalRunner` apply."""

    name = "bwrap"

    def __init__(self, bwrap: str | None = None, prlimit: str | None = "auto") -> None:
        super().__init__(prlimit=prlimit)
        self.bwrap = bwrap or shutil.which("bwrap") or "bwrap"
        self.setpriv = shutil.which("setpriv")
        self.as_root = os.geteuid() == 0

    def command(
        self, argv: Sequence[str], limits: Limits, timeout: float, files: Sequence[tuple[int, str]]
    ) -> list[str]:
        """The ``bwrap`` command line running ``argv``; ``files`` are ``(fd, path in the sandbox)`` to copy in."""
        if self.as_root:  # no user namespace: it would make the program root on the host (see the module docs)
            namespaces = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
        else:
            namespaces = ["--unshare-all"]
        cmd = [self.bwrap, *namespaces, "--die-with-parent", "--new-session", "--dev", "/dev", "--proc", "/proc"]
        disk = limits.disk_bytes
        cmd += ["--perms", "1777", *(["--size", str(disk)] if disk else []), "--tmpfs", "/tmp"]
        cmd += _binds(argv[0])  # after the private /tmp, so an interpreter under /tmp (a venv there) stays visible
        made = {WORKDIR}
        cmd += ["--perms", "0777", "--dir", WORKDIR]
        for fd, path in files:
            parent = str(PurePosixPath(path).parent)
            missing = []
            while parent not in made:
                missing.append(parent)
                made.add(parent)
                parent = str(PurePosixPath(parent).parent)
            for directory in reversed(missing):
                cmd += ["--perms", "0777", "--dir", directory]
            cmd += ["--perms", "0666", "--file", str(fd), path]
        cmd += ["--chdir", WORKDIR, "--"]
        inner = list(argv)
        if self.as_root:
            uid = str(_UID_BASE + secrets.randbelow(1_000_000))
            drop = [f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]  # bwrap has set no_new_privs, dropped caps
            inner = [self.setpriv or "setpriv", *drop, "--", *inner]
        return cmd + self._wrap(inner, sandbox_limits(limits), timeout)

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
        """Run ``argv`` in the sandbox, in ``/tmp/work`` holding ``files``; see the module docs."""
        limits = limits or Limits()
        fds: list[tuple[int, str]] = []
        try:
            for name, content in (files or {}).items():
                target = sandbox_path(name)
                fd = os.memfd_create("evsys-file", 0)
                fds.append((fd, str(target)))
                data = memoryview(content if isinstance(content, bytes) else content.encode("utf-8"))
                while data:
                    data = data[os.write(fd, data) :]
                os.lseek(fd, 0, os.SEEK_SET)
            child_env = minimal_env(WORKDIR, env)
            cmd = self.command(argv, limits, timeout, fds)
            return self._run(cmd, None, child_env, timeout, max_output, pass_fds=tuple(fd for fd, _ in fds))
        finally:
            for fd, _ in fds:
                os.close(fd)


@functools.lru_cache(maxsize=1)
def bwrap_problem() -> str | None:
    """Why bubblewrap cannot run programs here (``None``: it can); found out once by a trial run."""
    if not sys.platform.startswith("linux"):
        return f"bubblewrap needs Linux (this is {sys.platform})"
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) not found"
    probe = BwrapRunner()
    if probe.as_root and probe.setpriv is None:
        return "setpriv (util-linux) not found; as root the sandbox needs it to drop to an unprivileged uid"
    try:
        result = probe.run([sys.executable, "-S", "-E", "-c", "pass"], timeout=30)
    except OSError as exc:
        return f"bwrap cannot start: {exc}"
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        return f"bwrap cannot run here: {lines[-1] if lines else f'exit status {result.returncode}'}"
    return None


def sandbox_path(name: str) -> PurePosixPath:
    """Where file ``name`` of a run lies in the sandbox (under ``/tmp/work``); a name that leaves it is a ValueError."""
    target = PurePosixPath(os.path.normpath(PurePosixPath(WORKDIR, name)))
    if not target.is_relative_to(WORKDIR) or str(target) == WORKDIR:
        raise ValueError(f"file name {name!r} leaves the run directory")
    return target


def sandbox_limits(limits: Limits | None) -> Limits:
    """``limits`` for a run in a sandbox: unset processes become :data:`DEFAULT_PROCESSES`."""
    limits = limits or Limits()
    if limits.processes is None:
        limits = Limits(**{**limits.__dict__, "processes": DEFAULT_PROCESSES})
    return limits


@functools.cache
def bwrap_version() -> str | None:
    """``bubblewrap 0.8.0`` (the ``bwrap --version`` line), or ``None`` where it is not installed."""
    path = shutil.which("bwrap")
    if path is None:
        return None
    try:
        return subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


_PROCESS_SETTING: str | None = None
_TASK_SETTING: contextvars.ContextVar[str | None] = contextvars.ContextVar("evsys_verifier_sandbox", default=None)
_WARNED = threading.Event()
_RUNNERS: dict[str, LocalRunner] = {}
_COUNTS: dict[str, int] = {}
_COUNTS_LOCK = threading.Lock()


def _checked(value: str | None, where: str) -> str | None:
    if value is None or not value.strip():
        return None
    value = value.strip().lower()
    if value not in SANDBOX_CHOICES:
        raise EvsysError(f"{where}: unknown sandbox {value!r}; expected one of {', '.join(SANDBOX_CHOICES)}")
    return value


def set_sandbox(setting: str | None) -> None:
    """The process's sandbox setting (``auto``, ``bwrap``, ``none``; ``None``: ``$EVSYS_VERIFIER_SANDBOX``)."""
    global _PROCESS_SETTING
    _PROCESS_SETTING = _checked(setting, "sandbox")


def process_setting() -> str | None:
    """:func:`set_sandbox`'s setting, else ``$EVSYS_VERIFIER_SANDBOX``'s (``None``: neither is set)."""
    if _PROCESS_SETTING is not None:
        return _PROCESS_SETTING
    return _checked(os.environ.get(SANDBOX_ENV), SANDBOX_ENV)


@contextlib.contextmanager
def sandbox_setting(setting: str | None) -> Iterator[None]:
    """Within the block, programs run under a task's setting (its ``verifier.sandbox``) too."""
    token = _TASK_SETTING.set(_checked(setting, "verifier.sandbox"))
    try:
        yield
    finally:
        _TASK_SETTING.reset(token)


def resolve_sandbox(*settings: str | None) -> str:
    """``"bwrap"`` or ``"none"`` for ``settings`` plus the task's and the process's (rules in the module docs).

    Raises :class:`SandboxUnavailable` when ``bwrap`` is demanded and cannot run; with ``auto`` and
    no bubblewrap, warns once per process (one line: what runs unsandboxed and how to get the sandbox).
    """
    explicit = {_checked(s, "sandbox") for s in (*settings, _TASK_SETTING.get(), process_setting())} - {None, "auto"}
    problem = bwrap_problem() if "none" not in explicit or "bwrap" in explicit else None
    if "bwrap" in explicit:
        if problem is not None:
            raise SandboxUnavailable(f"sandbox 'bwrap' is required but {problem}: {INSTALL_HINT}")
        return "bwrap"
    if "none" in explicit:
        return "none"
    if problem is None:
        return "bwrap"
    if not _WARNED.is_set():
        _WARNED.set()
        logger.warning(
            "verifier programs (python_tests, subprocess checkers) run unsandboxed, with resource limits only: "
            "%s; %s, or set %s=none to accept this",
            problem,
            INSTALL_HINT,
            SANDBOX_ENV,
        )
    return "none"


def bwrap_mode() -> str:
    """How bubblewrap runs programs: ``pool`` (one long-lived sandbox per worker, each program isolated
    within it; the default) or ``per-program`` (one ``bwrap`` each), by ``$EVSYS_VERIFIER_BWRAP``."""
    value = os.environ.get(BWRAP_MODE_ENV, "").strip().lower() or "pool"
    if value not in BWRAP_MODES:
        raise EvsysError(f"{BWRAP_MODE_ENV}: unknown mode {value!r}; expected one of {', '.join(BWRAP_MODES)}")
    return value


def _bwrap_runner() -> BwrapRunner:
    mode = bwrap_mode()
    runner = _RUNNERS.get(f"bwrap {mode}")
    if runner is None:
        if mode == "pool":
            from evsys.verifiers.sandbox_pool import PooledBwrapRunner, pool_problem

            problem = pool_problem()
            if problem is None:
                runner = PooledBwrapRunner()
            else:
                logger.warning("the pooled bubblewrap sandbox cannot run (%s): one bwrap per program", problem)
                runner = _RUNNERS.get("bwrap per-program") or BwrapRunner()
        else:
            runner = BwrapRunner()
        _RUNNERS[f"bwrap {mode}"] = runner
    assert isinstance(runner, BwrapRunner)
    return runner


def _count(name: str) -> None:
    with _COUNTS_LOCK:
        _COUNTS[name] = _COUNTS.get(name, 0) + 1


def select_runner(plugged: object | None) -> object:
    """The runner for the next program: ``plugged`` (a custom runner) unless ``bwrap`` is demanded, else by setting."""
    if plugged is not None and "bwrap" not in {_TASK_SETTING.get(), process_setting()}:
        kind = type(plugged)
        _count(f"runner {kind.__module__}.{kind.__qualname__} (plugged in)")
        return plugged
    choice = resolve_sandbox()
    if choice == "bwrap":
        runner: LocalRunner = _bwrap_runner()
    else:
        runner = _RUNNERS.get(choice) or _RUNNERS.setdefault(choice, LocalRunner())
    _count(choice)
    return runner


def program_counts() -> dict[str, int]:
    """How many verifier programs this process has run, by runner (``bwrap``, ``none``, ``runner ...``)."""
    with _COUNTS_LOCK:
        return dict(_COUNTS)


def programs_line(before: Mapping[str, int] | None = None) -> str | None:
    """``Verifier programs: 240 in bwrap (bubblewrap 0.8.0)`` for the programs run since ``before``
    (a :func:`program_counts`); ``None`` when none ran. For a run's ``summary.md``."""
    before = before or {}
    ran = {name: count - before.get(name, 0) for name, count in program_counts().items()}
    parts = []
    for name, count in sorted(ran.items()):
        if count <= 0:
            continue
        if name == "bwrap":
            where = f"bwrap ({bwrap_version()})"
        elif name == "none":
            where = "the plain runner, unsandboxed (resource limits only)"
        else:
            where = name
        parts.append(f"{count} in {where}")
    return f"Verifier programs: {', '.join(parts)}" if parts else None


def describe_sandbox(*settings: str | None) -> str:
    """One phrase naming what runs verifier programs, e.g. ``bwrap (bubblewrap 0.8.0)`` or ``none (...)``."""
    from evsys.verifiers import runner

    plugged = runner.plugged_runner()
    explicit = {_checked(s, "sandbox") for s in (*settings, process_setting())}
    if plugged is not None and "bwrap" not in explicit:
        kind = type(plugged)
        return f"runner {kind.__module__}.{kind.__qualname__} (plugged in)"
    problem = bwrap_problem()
    if "bwrap" in explicit:
        return f"bwrap ({bwrap_version()})" if problem is None else f"bwrap required but {problem}"
    if "none" in explicit:
        return "none (sandbox: none; programs run with resource limits only)"
    if problem is None:
        return f"bwrap ({bwrap_version()})"
    return f"none ({problem}: programs run with resource limits only; {INSTALL_HINT})"
