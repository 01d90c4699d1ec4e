"""The supervisor inside a pooled bubblewrap sandbox (see :mod:`evsys.verifiers.sandbox_pool`).

Not imported: :class:`~evsys.verifiers.sandbox_pool.PooledBwrapRunner` reads this file and runs it with
``python -S -E -s -c SOURCE CONFIG`` as the sandbox's pid 1 (``bwrap --as-pid-1``), its only long-lived
process. ``CONFIG`` (JSON): ``"uid"``, the uid (and gid) it switches to before serving, as root (a fresh
one per sandbox, which drops every capability), else ``null`` (it already runs as the user, with none).

It reads one request at a time from stdin (a 4-byte length, then JSON: ``argv``, ``files``, ``env``,
``timeout``, ``max_output``), starts the program in ``/tmp/work`` in a session of its own, collects its
output, then kills every other process of the sandbox and reaps them all before it answers on stdout;
after the answer it removes everything the run left (files in ``/tmp``, SysV IPC objects, keys) before it
reads the next request. Being the pid namespace's init protects it: no process in the sandbox can send
it a signal it has not asked for (it asks for none), and ``kill(-1, SIGKILL)`` reaches every process but
it. It exits when stdin closes (the scorer is gone), and the kernel then kills whatever is left. Standard
library only: it runs before any site-packages.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # in the sandbox, output_pump.py's source runs ahead of this one (sandbox_pool.SUPERVISOR)
    from evsys.verifiers.output_pump import pump_output

HEADER = struct.Struct("!I")
TMP = "/tmp"
WORK = "/tmp/work"
libc = ctypes.CDLL(None, use_errno=True)
CONFIG: dict[str, Any] = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}  # {"uid": int | None}
PR_SET_DUMPABLE = 4
SYS_KEYCTL = {"x86_64": 250, "aarch64": 219, "riscv64": 219, "ppc64le": 311, "s390x": 280}
KEYCTL_CLEAR, USER_KEYRING, USER_SESSION_KEYRING = 7, -4, -5


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


def become(uid: int) -> None:
    """(As root) switch every uid and gid to ``uid``, with no groups: the kernel then clears every capability."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def drop_inheritable() -> None:
    """Clear this process's inheritable capabilities, so no program inherits any (a uid change keeps them)."""
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (ctypes.c_uint32 * 6)()  # {effective, permitted, inheritable} x 2 words
    if libc.capget(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    data[2] = data[5] = 0
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def not_dumpable() -> None:
    """Make this process non-dumpable: no process without CAP_SYS_PTRACE over it may ptrace it or read its
    /proc files (``environ``, ``mem``, ``fd``), even one of the same uid. (A uid change resets it: call it after.)"""
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl")


def alive() -> list[int]:
    """The sandbox's live processes but this one (pid 1): the run's."""
    found: list[int] = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and pid != "1":
            try:
                with open(f"/proc/{pid}/stat", "rb") as handle:
                    state = handle.read().rsplit(b")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state not in (b"Z", b"X"):
                found.append(int(pid))
    return found


def reap() -> None:
    """Reap every child that has exited (orphans of the run come to this process, the namespace's init)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def kill_all() -> None:
    """SIGKILL every process of the run and reap them, until none is left (at most 5 s: one stuck in the
    kernel; then this supervisor exits and the scorer starts a fresh sandbox)."""
    deadline = time.monotonic() + 5
    while True:
        with contextlib.suppress(ProcessLookupError):  # every process but this one (atomic against fork)
            os.kill(-1, signal.SIGKILL)
        reap()
        if not alive():
            reap()
            return
        if time.monotonic() > deadline:
            raise RuntimeError("a process of the run outlived SIGKILL")
        time.sleep(0.001)


def skeleton() -> tuple[int, dict[str, int]]:
    """The device of /tmp and the directories under it that bubblewrap made (parents of the read-only binds
    of an interpreter under /tmp), with their modes: :func:`wipe` keeps them, empty but for those binds."""
    device = os.stat(TMP).st_dev
    dirs = {TMP: stat.S_IMODE(os.stat(TMP).st_mode)}
    for root, names, _ in os.walk(TMP):
        for name in list(names):
            path = os.path.join(root, name)
            info = os.lstat(path)
            if info.st_dev != device:
                names.remove(name)  # a bind: not walked
            else:
                dirs[path] = stat.S_IMODE(info.st_mode)
    return device, dirs


def remove_tree(path: str) -> None:
    """Remove the directory ``path`` and everything in it, whatever modes the program gave them."""
    os.chmod(path, 0o700)
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                remove_tree(entry.path)
            else:
                os.unlink(entry.path)
    os.rmdir(path)


def clear(path: str, device: int, kept: dict[str, int]) -> None:
    """Remove everything in ``path`` but the read-only binds and the directories in ``kept``, which are
    emptied the same way and get their modes back (where they are this uid's: a program could change them)."""
    mine = os.stat(path).st_uid == os.getuid()
    if mine:
        os.chmod(path, kept[path] | 0o700)
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.stat(follow_symlinks=False).st_dev != device:
                continue  # an interpreter's read-only bind
            if entry.path in kept:
                clear(entry.path, device, kept)
            elif entry.is_dir(follow_symlinks=False):
                remove_tree(entry.path)
            else:
                os.unlink(entry.path)
    if mine:
        os.chmod(path, kept[path])


def wipe(device: int, kept: dict[str, int]) -> None:
    """Remove what a run can leave once its processes are gone: everything in /tmp (the only place a program
    can write), every SysV IPC object of the sandbox and every key in its user keyrings."""
    clear(TMP, device, kept)
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
            if remove(int(dict(zip(head, row.split(), strict=False))[head[1]])) != 0:
                raise OSError(ctypes.get_errno(), f"cannot remove a SysV {kind} object")
    keyctl = SYS_KEYCTL.get(os.uname().machine)
    if keyctl is not None:
        for keyring in (USER_KEYRING, USER_SESSION_KEYRING):  # (the session keyrings went with the processes)
            libc.syscall(keyctl, KEYCTL_CLEAR, keyring)


def write_files(request: dict[str, Any]) -> None:
    """Make /tmp/work holding the run's files."""
    os.mkdir(WORK, 0o755)
    for name, data in request["files"]:
        path = os.path.join(WORK, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(bytes.fromhex(data))


def start(request: dict[str, Any]) -> subprocess.Popen[bytes]:
    """The program started in /tmp/work, in a session of its own (its limits: ``argv`` starts with ``prlimit``)."""
    return subprocess.Popen(
        request["argv"],
        cwd=WORK,
        env=request["env"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def run(request: dict[str, Any]) -> dict[str, Any]:
    """Run one program; returns its exit status and output (hex). No process of the run is alive after it."""
    start_time = time.monotonic()
    write_files(request)
    proc = start(request)  # (an OSError here is the run's error: main answers it)
    assert proc.stdout is not None and proc.stderr is not None

    def control() -> bool:
        if not os.read(0, 1):  # the scorer is gone: so is every run (the kernel kills them when this exits)
            os._exit(0)
        return True

    try:
        stdout, stderr, timed_out, exceeded = pump_output(
            proc.stdout.fileno(), proc.stderr.fileno(), deadline=start_time + request["timeout"],
            max_output=request["max_output"], exited=lambda: proc.poll() is not None, others={0: control},
            poll_s=0.05,
        )
        if not timed_out and not exceeded:
            until = min(start_time + request["timeout"], time.monotonic() + 0.2)
            while proc.poll() is None and time.monotonic() < until:
                time.sleep(0.0005)  # its output closed: the program is exiting
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(-1, signal.SIGKILL)  # every process of the run at once (see kill_all)
        returncode = proc.wait()  # (before kill_all reaps every child: the program's status is its own)
        proc.stdout.close()
        proc.stderr.close()
        kill_all()
    return {
        "returncode": returncode,
        "timed_out": timed_out,
        "exceeded": exceeded,
        "stdout": stdout.hex(),
        "stderr": stderr.hex(),
    }


def main() -> None:
    """Serve requests until stdin closes."""
    for signum in (signal.SIGPIPE, signal.SIGINT):  # no handler: the kernel drops them when a program sends them
        signal.signal(signum, signal.SIG_DFL)
    drop_inheritable()
    if CONFIG.get("uid") is not None:
        become(int(CONFIG["uid"]))
    not_dumpable()
    os.umask(0o022)
    device, kept = skeleton()
    answer({"ready": True})
    while True:
        request = json.loads(read_exact(HEADER.unpack(read_exact(HEADER.size))[0]))
        try:
            reply = run(request)
        except Exception as exc:
            try:
                kill_all()
            except Exception:
                sys.exit(1)  # never run a program in a sandbox that is not clean: the scorer starts a fresh one
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        answer(reply)  # when the scorer has it, no process of the run is alive
        try:
            wipe(device, kept)  # before the next request: nothing of this run reaches it
        except Exception:
            sys.exit(1)


if __name__ == "__main__":
    main()
