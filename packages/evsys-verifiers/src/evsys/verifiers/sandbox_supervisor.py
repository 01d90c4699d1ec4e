"""The supervisor inside a pooled bubblewrap sandbox (see :mod:`evsys.verifiers.sandbox_pool`).

Not imported: :class:`~evsys.verifiers.sandbox_pool.PooledBwrapRunner` reads this file and runs it with
``python -S -E -s -c`` as the sandbox's only long-lived process, root in the sandbox with a few
capabilities (``CAP_SETUID``, ``CAP_SETGID``, ``CAP_CHOWN``, ``CAP_KILL``, ``CAP_DAC_OVERRIDE``,
``CAP_FOWNER``) and ``no_new_privs``. It reads one request at a time from stdin (a 4-byte length,
then JSON: ``argv``, ``files``, ``env``, ``uid``, ``timeout``, ``max_output``), runs the program,
answers on stdout, then removes everything the run left before it reads the next request. It exits
when stdin closes (the scorer is gone). Standard library only: it runs before any site-packages.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

HEADER = struct.Struct("!I")
WORK = "/tmp/work"
ME = os.getpid()
libc = ctypes.CDLL(None, use_errno=True)


def read_exact(size: int) -> bytes:
    """``size`` bytes from stdin; exits when the scorer closed it."""
    data = b""
    while len(data) < size:
        chunk = os.read(0, size - len(data))
        if not chunk:
            sys.exit(0)
        data += chunk
    return data


def answer(reply: dict[str, Any]) -> None:
    """Write ``reply`` (JSON) to stdout, length first."""
    data = json.dumps(reply).encode()
    data = HEADER.pack(len(data)) + data
    while data:
        data = data[os.write(1, data) :]


def no_inheritable_caps() -> None:
    """Clear this process's inheritable capabilities, so a program inherits none (its uid drops the rest)."""
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (ctypes.c_uint32 * 6)()
    if libc.capget(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    data[2] = data[5] = 0
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def alive() -> list[int]:
    """The sandbox's live processes but its init (pid 1) and this one: the run's."""
    found: list[int] = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) not in (1, ME):
            try:
                with open(f"/proc/{pid}/stat", "rb") as handle:
                    state = handle.read().rsplit(b")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state not in (b"Z", b"X"):
                found.append(int(pid))
    return found


def kill_all(proc: subprocess.Popen[bytes] | None = None) -> None:
    """SIGKILL every process of the run, until none is alive (at most 5 s: one stuck in the kernel)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError):  # every process but init and this one (atomic against fork)
            os.kill(-1, signal.SIGKILL)
        if proc is not None:
            proc.poll()  # this process's only child; orphans go to init, which reaps them
        if not alive():
            return
        time.sleep(0.001)


def wipe() -> None:
    """Remove everything in /tmp (the only place a program can write) and every SysV IPC object."""
    for entry in os.scandir("/tmp"):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
    removers: dict[str, Callable[[int], int]] = {
        "shm": lambda ident: libc.shmctl(ident, 0, None),  # IPC_RMID
        "msg": lambda ident: libc.msgctl(ident, 0, None),
        "sem": lambda ident: libc.semctl(ident, 0, 0),
    }
    for kind, remove in removers.items():
        with open(f"/proc/sysvipc/{kind}") as handle:
            rows = handle.read().splitlines()
        head = rows[0].split()
        for row in rows[1:]:
            cells = dict(zip(head, row.split(), strict=False))
            os.setresuid(-1, int(cells["uid"]), -1)  # only its owner may remove it (no CAP_SYS_ADMIN here)
            try:
                remove(int(cells[head[1]]))
            finally:
                os.setresuid(-1, 0, -1)


def prepare(request: dict[str, Any]) -> None:
    """Make /tmp/work holding the run's files, all owned by the run's uid."""
    uid = request["uid"]
    os.mkdir(WORK, 0o755)
    os.chown(WORK, uid, uid)
    for name, data in request["files"]:
        path = os.path.join(WORK, name)
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            os.makedirs(parent)
            while parent != WORK:
                os.chown(parent, uid, uid)
                parent = os.path.dirname(parent)
        with open(path, "wb") as handle:
            handle.write(bytes.fromhex(data))
        os.chown(path, uid, uid)


def run(request: dict[str, Any]) -> dict[str, Any]:
    """Run one program as the request's uid; returns its exit status and output (hex)."""
    prepare(request)
    uid = request["uid"]
    start = time.monotonic()
    proc = subprocess.Popen(
        request["argv"],
        cwd=WORK,
        env=request["env"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        user=uid,
        group=uid,
        extra_groups=[],
        start_new_session=True,
        umask=0o022,
    )
    deadline = start + request["timeout"]
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.fileno(), proc.stderr.fileno()
    chunks: dict[int, list[bytes]] = {out: [], err: []}
    total, timed_out, exceeded = 0, False, False
    exited_at: float | None = None
    with selectors.DefaultSelector() as selector:
        for fd in (out, err, 0):
            selector.register(fd, selectors.EVENT_READ)
        while len(selector.get_map()) > 1:
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                break
            if exited_at is not None and now - exited_at > 0.2:
                break  # the program is gone but a descendant holds its output open
            for key, _ in selector.select(min(deadline - now, 0.05)):
                if key.fd == 0:
                    if not os.read(0, 1):
                        kill_all(proc)
                        os._exit(0)
                    continue
                data = os.read(key.fd, 65536)
                if not data:
                    selector.unregister(key.fd)
                    continue
                chunks[key.fd].append(data)
                total += len(data)
                exceeded = exceeded or total > request["max_output"]
            if exceeded:
                break
            if exited_at is None and proc.poll() is not None:
                exited_at = time.monotonic()
    if not timed_out and not exceeded:
        until = min(deadline, time.monotonic() + 0.2)
        while proc.poll() is None and time.monotonic() < until:
            time.sleep(0.0005)  # its output closed: the program is exiting
    kill_all(proc)
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    return {
        "returncode": proc.returncode,
        "timed_out": timed_out,
        "exceeded": exceeded,
        "stdout": b"".join(chunks[out]).hex(),
        "stderr": b"".join(chunks[err]).hex(),
    }


def main() -> None:
    """Serve requests until stdin closes."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    no_inheritable_caps()
    answer({"ready": True})
    while True:
        request = json.loads(read_exact(HEADER.unpack(read_exact(HEADER.size))[0]))
        try:
            reply = run(request)
        except Exception as exc:
            kill_all()
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        answer(reply)
        try:
            wipe()  # every process of the run is dead: its files and IPC objects go before the next request
        except Exception:
            sys.exit(1)  # never run a program in a sandbox that is not clean: the scorer starts a fresh one


if __name__ == "__main__":
    main()
