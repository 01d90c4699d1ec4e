"""The supervisor inside a pooled bubblewrap sandbox (see :mod:`evsys.verifiers.sandbox_pool`).

Not imported: :class:`~evsys.verifiers.sandbox_pool.PooledBwrapRunner` reads this file and runs it with
``python -S -E -s -c SOURCE CONFIG`` as the sandbox's only long-lived process; ``CONFIG`` (JSON) says how
it keeps runs apart: ``"mode": "uid"`` (root in the sandbox with a few capabilities: a fresh uid per
program) or ``"namespaces"`` (unprivileged: fresh namespaces per program). It reads one request at a
time from stdin (a 4-byte length, then JSON: ``argv``, ``files``, ``env``, ``uid``, ``rlimits``, ``disk``,
``timeout``, ``max_output``), runs the program, makes sure none of its processes is alive and answers
on stdout; as root it then removes everything the run left. It exits when stdin closes (the scorer is
gone). Standard library only: it runs before any site-packages.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # in the sandbox, output_pump.py's source runs ahead of this one (sandbox_pool.SUPERVISOR)
    from evsys.verifiers.output_pump import pump_output

HEADER = struct.Struct("!I")
WORK = "/tmp/work"
ME = os.getpid()
libc = ctypes.CDLL(None, use_errno=True)
CONFIG: dict[str, Any] = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}  # {"mode": "uid" | "namespaces", ...}
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID = 0x20000, 0x8000000, 0x10000000, 0x20000000
PR_SET_DUMPABLE = 4
SYS_CLONE = {"x86_64": 56, "aarch64": 220, "riscv64": 220, "ppc64le": 120, "s390x": 120}
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 8, 32, 4096, 16384
PROC_READ_ONLY = ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus")
STASH = "/.evsys-stash"  # where an interpreter under /tmp is bound too, to be bound again over a run's fresh /tmp


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


def drop_caps(every: bool = False) -> None:
    """Clear this process's inheritable capabilities, so a program inherits none (its uid drops the rest);
    ``every``: all of them (effective and permitted too)."""
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (ctypes.c_uint32 * 6)()
    if libc.capget(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    for index in range(6) if every else (2, 5):
        data[index] = 0
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def not_dumpable(dumpable: int = 0) -> None:
    """Make this process non-dumpable: no process without CAP_SYS_PTRACE over it may ptrace it or read its
    /proc files (``environ``, ``mem``), even one of the same uid. A program's ``exec`` makes it dumpable again."""
    if libc.prctl(PR_SET_DUMPABLE, dumpable, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl")


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


def write_files(request: dict[str, Any], uid: int | None) -> None:
    """Make /tmp/work holding the run's files (owned by ``uid`` where given)."""
    os.mkdir(WORK, 0o755)
    if uid is not None:
        os.chown(WORK, uid, uid)
    for name, data in request["files"]:
        path = os.path.join(WORK, name)
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            os.makedirs(parent)
            while parent != WORK and uid is not None:
                os.chown(parent, uid, uid)
                parent = os.path.dirname(parent)
        with open(path, "wb") as handle:
            handle.write(bytes.fromhex(data))
        if uid is not None:
            os.chown(path, uid, uid)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    """mount(2), raising OSError."""

    def arg(text: str | None) -> bytes | None:
        return text.encode() if text is not None else None

    if libc.mount(arg(source), arg(target), arg(fstype), flags, arg(data)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {target}: {os.strerror(errno)}")


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` in one write (a /proc control file)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def clone_into_namespaces() -> int:
    """fork(2) into new user, mount, pid and IPC namespaces: 0 in the child (pid 1 there), its pid in the parent."""
    flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | signal.SIGCHLD
    ctypes.pythonapi.PyOS_BeforeFork()
    pid = libc.syscall(SYS_CLONE[os.uname().machine], ctypes.c_ulong(flags), None, None, None, None)
    errno = ctypes.get_errno()
    if pid == 0:
        ctypes.pythonapi.PyOS_AfterFork_Child()
        return 0
    ctypes.pythonapi.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(errno, f"clone: {os.strerror(errno)}")
    return int(pid)


def isolate(request: dict[str, Any]) -> None:
    """(Pid 1 of the run's new namespaces) map the sandbox's uid to itself (not 0: the program's exec drops
    every capability), make a fresh size-capped tmpfs on /tmp holding /tmp/work and the run's files and a
    fresh /proc, then drop every capability."""
    uid, gid = os.getuid(), os.getgid()
    not_dumpable(1)  # (the supervisor is not) only a dumpable process owns its /proc files, to write its maps
    write_text("/proc/self/setgroups", "deny")
    write_text("/proc/self/uid_map", f"{uid} {uid} 1")
    write_text("/proc/self/gid_map", f"{gid} {gid} 1")
    not_dumpable()  # the program (dumpable again after its exec) cannot ptrace its init
    size = f",size={request['disk']}" if request.get("disk") else ""
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777" + size)
    for path in CONFIG.get("stashed", []):  # an interpreter (a venv) under /tmp: bound again, read-only
        os.makedirs(path, exist_ok=True)
        mount(STASH + path, path, None, MS_BIND | MS_REC)
    for target, path in CONFIG.get("links", []):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(target, path)
    write_files(request, None)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for path in PROC_READ_ONLY:  # as bubblewrap's --proc: the kernel's knobs read-only
        if os.path.exists(path):
            mount(path, path, None, MS_BIND | MS_REC)
            mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    drop_caps(every=True)


def be_init(request: dict[str, Any], status: int) -> None:
    """Pid 1 of the run's namespaces: set them up (:func:`isolate`), start the program (a session of its own,
    in /tmp/work), write its wait status to ``status`` and exit when it exits (the kernel then kills
    whatever is left of the run)."""
    try:
        isolate(request)
        os.chdir(WORK)
        os.umask(0o022)
        for name, (soft, hard) in request["rlimits"].items():  # the program's, inherited (this init forks no more)
            if name == "RLIMIT_NPROC":  # counted in the run's own user namespace: this init is one of them
                soft, hard = soft + 1, hard + 1
            resource.setrlimit(getattr(resource, name), (soft, hard))
        argv = request["argv"]
        try:
            program = os.posix_spawnp(
                argv[0], argv, request["env"], setsid=True, setsigdef=(signal.SIGPIPE, signal.SIGXFSZ)
            )
        except OSError as exc:
            os.write(2, f"evsys sandbox: cannot run {argv[0]}: {exc}\n".encode())
            os.write(status, f"exit {127 << 8}".encode())
            os._exit(0)
        for fd in (0, 1, 2):
            os.close(fd)  # the run's output closes when the program's processes are gone
        while True:
            pid, wait_status = os.waitpid(-1, 0)
            if pid == program:
                os.write(status, f"exit {wait_status}".encode())
                os._exit(0)
    except BaseException as exc:
        os.write(status, f"error {type(exc).__name__}: {exc}".encode())
    os._exit(1)


class Nested:
    """A program started in namespaces of its own (see :func:`be_init`); ``poll``, ``wait``, ``returncode``
    and its output pipes as :class:`subprocess.Popen`'s."""

    def __init__(self, request: dict[str, Any]) -> None:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        status_r, status_w = os.pipe()
        self.pid = clone_into_namespaces()
        if self.pid == 0:
            try:
                os.dup2(out_w, 1)
                os.dup2(err_w, 2)
                os.dup2(os.open("/dev/null", os.O_RDONLY), 0)
                os.closerange(3, status_w)
                os.closerange(status_w + 1, 65536)
                be_init(request, status_w)
            finally:
                os._exit(1)
        for fd in (out_w, err_w, status_w):
            os.close(fd)
        os.set_blocking(status_r, False)
        self.stdout, self.stderr, self.status = os.fdopen(out_r, "rb", 0), os.fdopen(err_r, "rb", 0), status_r
        self.returncode: int | None = None
        self.error: str | None = None
        self.reaped = False

    def poll(self) -> int | None:
        """The program's exit code (negative: the signal that ended it) once it ended, else ``None``."""
        if not self.reaped and os.waitpid(self.pid, os.WNOHANG)[0]:
            self.reaped = True
        if self.returncode is None:
            try:
                message = os.read(self.status, 4096).decode()
            except BlockingIOError:
                return None
            if message.startswith("exit "):
                self.returncode = os.waitstatus_to_exitcode(int(message[5:]))
            elif message.startswith("error "):
                self.error, self.returncode = message[6:], -1
            else:  # its init was killed (the run's end)
                self.returncode = -signal.SIGKILL
        return self.returncode

    def wait(self) -> int:
        """Reap the run's init (every process of the run is dead by now) and return the exit code."""
        if not self.reaped:
            os.waitpid(self.pid, 0)
            self.reaped = True
        os.set_blocking(self.status, True)
        code = self.poll()
        os.close(self.status)
        return -signal.SIGKILL if code is None else code


def start(request: dict[str, Any]) -> Any:
    """The program started: in namespaces of its own (the supervisor is unprivileged), else as the request's uid."""
    if CONFIG.get("mode") == "namespaces":
        return Nested(request)
    uid = request["uid"]
    write_files(request, uid)
    return subprocess.Popen(
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


def run(request: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Run one program; returns its exit status and output (hex), and the program for :func:`finish`.
    Every process of the run has been sent SIGKILL when it returns (:func:`finish` reaps them)."""
    start_time = time.monotonic()
    proc = start(request)
    deadline = start_time + request["timeout"]
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.fileno(), proc.stderr.fileno()
    status = getattr(proc, "status", None)  # Nested: the exit status arrives on a pipe of its own

    def control() -> bool:
        if not os.read(0, 1):  # the scorer is gone: so is every run
            kill_all(proc)
            os._exit(0)
        return True

    others: dict[int, Callable[[], bool]] = {0: control}
    if status is not None:
        others[status] = lambda: False  # readable once the exit status is in: poll() reads it
    stdout, stderr, timed_out, exceeded = pump_output(
        out, err, deadline=deadline, max_output=request["max_output"], exited=lambda: proc.poll() is not None,
        others=others, poll_s=0.05,
    )
    if not timed_out and not exceeded:
        until = min(deadline, time.monotonic() + 0.2)
        while proc.poll() is None and time.monotonic() < until:
            time.sleep(0.0005)  # its output closed: the program is exiting
    with contextlib.suppress(ProcessLookupError):
        os.kill(-1, signal.SIGKILL)  # every process of the run at once (see kill_all); finish() reaps them
    returncode = proc.poll() if status is not None else proc.wait()
    if getattr(proc, "error", None):
        return {"error": proc.error}, proc
    reply = {
        "returncode": -signal.SIGKILL if returncode is None else returncode,
        "timed_out": timed_out,
        "exceeded": exceeded,
        "stdout": stdout.hex(),
        "stderr": stderr.hex(),
    }
    return reply, proc


def finish(proc: Any) -> None:
    """Make sure no process of the run is alive, and reap it."""
    if not isinstance(proc, Nested):
        kill_all(proc)  # (a run in namespaces of its own is over once its init is reaped: the kernel killed the rest)
    if proc is not None:
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def main() -> None:
    """Serve requests until stdin closes."""
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    gc.freeze()  # a forked run's init then copies fewer of this process's pages
    not_dumpable()
    drop_caps()
    answer({"ready": True})
    while True:
        request = json.loads(read_exact(HEADER.unpack(read_exact(HEADER.size))[0]))
        proc = None
        try:
            reply, proc = run(request)
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        try:
            finish(proc)  # before the answer: when the scorer has it, nothing of the run is alive
        except Exception:
            sys.exit(1)  # never run a program in a sandbox that is not clean: the scorer starts a fresh one
        answer(reply)
        if CONFIG.get("mode") == "namespaces":
            continue  # the run's /tmp and IPC namespace went with it; the rest is read-only to programs
        try:
            wipe()  # every process of the run is dead: its files and IPC objects go before the next request
        except Exception:
            sys.exit(1)


if __name__ == "__main__":
    main()
