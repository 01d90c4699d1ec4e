"""Testing support (scoring never imports it): run Python as an ordinary, unprivileged user from root.

The sandbox differs by who runs it: as root the pooled sandbox gives each program a uid of its own, as
an ordinary user its own uid in a user namespace of the sandbox's (:mod:`evsys.verifiers.sandbox_pool`). CI runs as root; to check what
ordinary users get, tests and benchmarks run Python through :func:`run_unprivileged` as uid/gid
:data:`UNPRIVILEGED_UID` (``nobody``), no supplementary groups, no capabilities. :func:`unprivileged_problem`
says why that cannot be done here (tests skip with it as the reason).
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from evsys.verifiers.runner import minimal_env

__all__ = ["UNPRIVILEGED_UID", "run_unprivileged", "shared_directory", "unprivileged_problem"]

UNPRIVILEGED_UID = 65534


def _others_can_use(path: str) -> bool:
    """Whether any uid can reach and read ``path`` (``o+x`` on every parent; ``o+r``, and ``o+x`` for a
    directory or a program, on it)."""
    real = Path(os.path.realpath(path))
    try:
        if any(not os.stat(parent).st_mode & stat.S_IXOTH for parent in real.parents):
            return False
        mode = os.stat(real).st_mode
    except OSError:
        return False
    need = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) or mode & stat.S_IXUSR else 0)
    return mode & need == need


@functools.cache
def _interpreter() -> tuple[str, tuple[str, ...]] | str:
    """An interpreter of this Python's version that any uid can run, and the entries of ``sys.path`` it can
    read (this environment's packages), or why there is none."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [sys.executable, *(os.path.join(d, version) for d in ("/usr/local/bin", "/usr/bin"))]
    interpreter = next((c for c in candidates if os.path.isfile(c) and _others_can_use(c)), None)
    if interpreter is None:
        return f"no {version} that uid {UNPRIVILEGED_UID} can run ({os.path.realpath(sys.executable)} is not readable)"
    return interpreter, tuple(p for p in sys.path if p and os.path.isdir(p) and _others_can_use(p))


def run_unprivileged(
    args: Sequence[str], *, home: str, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` as uid/gid :data:`UNPRIVILEGED_UID` with no groups or capabilities, in ``home`` (a
    directory that uid can write, see :func:`shared_directory`), with this environment's packages. Root only."""
    found = _interpreter()
    if isinstance(found, str):
        raise RuntimeError(found)
    interpreter, paths = found
    uid = str(UNPRIVILEGED_UID)
    drop = [f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all"]  # as an ordinary login has
    command = [shutil.which("setpriv") or "setpriv", *drop, "--", interpreter, *args]
    child_env = {**minimal_env(home), "PYTHONPATH": os.pathsep.join(paths), **(env or {})}
    return subprocess.run(command, env=child_env, cwd=home, capture_output=True, text=True, timeout=timeout)


@contextmanager
def shared_directory() -> Iterator[str]:
    """A fresh directory under the system's temporary directory that the unprivileged uid can write; removed after."""
    path = tempfile.mkdtemp(prefix="evsys-unprivileged-")
    try:
        os.chmod(path, 0o777)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@functools.cache
def unprivileged_problem() -> str | None:
    """Why Python cannot be run here as an unprivileged uid with this environment's packages (``None``: it can)."""
    if not sys.platform.startswith("linux"):
        return f"needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "dropping to an unprivileged uid needs root (this process is unprivileged already)"
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) not found"
    found = _interpreter()
    if isinstance(found, str):
        return found
    with shared_directory() as home:
        probe = run_unprivileged(["-c", "import evsys.verifiers"], home=home, timeout=60)
    if probe.returncode != 0:
        lines = [line for line in probe.stderr.splitlines() if line.strip()]
        return f"uid {UNPRIVILEGED_UID} cannot import evsys.verifiers: {lines[-1] if lines else probe.returncode}"
    return None
