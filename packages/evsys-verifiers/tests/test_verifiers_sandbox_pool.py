"""The pooled bubblewrap runner: nothing of one program reaches the next one in the same sandbox.

Each test runs programs in one :class:`PooledBwrapRunner` one after another (so they share its one
sandbox, checked) and has the later program look for what the earlier one left. Every program is
bounded (a few processes, a few MiB, seconds). Run as root, the suite checks the pool whose supervisor
switches to a fresh uid; run as an ordinary user (test_verifiers_sandbox_unprivileged.py runs it so
from root), the pool in a user namespace of its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import PurePosixPath

import pytest

from evsys.schema.errors import EvsysError
from evsys.verifiers import runner, sandbox, sandbox_pool
from evsys.verifiers.runner import Limits, run_python

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux namespaces and /proc"),
    pytest.mark.skipif(sandbox.bwrap_problem() is not None, reason=f"needs bubblewrap: {sandbox.bwrap_problem()}"),
    pytest.mark.skipif(
        sandbox.bwrap_problem() is None and sandbox_pool.pool_problem() is not None,
        reason=f"the pooled sandbox cannot run here: {sandbox_pool.pool_problem()}",
    ),
]
AS_ROOT = os.geteuid() == 0

LIMITS = Limits(memory_bytes=512 << 20, processes=32)

LEAVE_BEHIND = """
import ctypes, os, socket, sys, time
libc = ctypes.CDLL(None, use_errno=True)
open('/tmp/leftover.txt', 'w').write('secret of the last run')
os.chmod('/tmp/leftover.txt', 0o666)
os.makedirs('/tmp/nest/deeper')
open('/tmp/nest/deeper/file', 'w').write('x')
os.chmod('/tmp/nest', 0o500)
try:
    open('/dev/shm/leftover', 'w').write('x')  # /dev/shm is root's (as root) or read-only (else) to programs
except OSError:
    pass
open('/tmp/work/in-the-workdir.txt', 'w').write('x')
shm = libc.shmget(0x5EED, 4096, 0o1666)  # IPC_CREAT | 0666
sem = libc.semget(0x5EEE, 1, 0o1666)
msg = libc.msgget(0x5EEF, 0o1666)
assert min(shm, sem, msg) >= 0, ctypes.get_errno()
if os.uname().machine == 'x86_64':  # a key in the uid's own keyring, which outlives its processes
    assert libc.syscall(248, b'user', b'evsys-leftover', b'secret', 6, -4) > 0, ctypes.get_errno()  # add_key
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(('127.0.0.1', 47011))
listener.listen()
read_w = os.pipe()
if os.fork() == 0:  # a daemon: a session of its own, holding the listening socket
    os.setsid()
    if os.fork() == 0:
        time.sleep(%(sleep)s)
        os._exit(0)
    os._exit(0)
os.wait()
%(tail)s
"""

LOOK_AROUND = """
import ctypes, json, os, socket
libc = ctypes.CDLL(None, use_errno=True)
me = os.getpid()
others = []
for pid in os.listdir('/proc'):
    if pid.isdigit() and int(pid) not in (me, 1):  # pid 1: the sandbox's init (root), else the run's own
        status = dict(l.split(':', 1) for l in open('/proc/%s/status' % pid).read().splitlines() if ':' in l)
        if status['State'].split()[0] != 'Z' and status['Uid'].split()[0] != '0':
            others.append((pid, status['Name'].strip(), status['Uid'].split()[0]))
try:
    socket.create_connection(('127.0.0.1', 47011), timeout=1).close()
    connected = True
except OSError:
    connected = False
seen = {
    'uid': os.getuid(),
    'tmp': sorted(os.listdir('/tmp')),
    'shm_files': sorted(os.listdir('/dev/shm')),
    'workdir': sorted(os.listdir('.')),
    'processes': others,
    'connected': connected,
    'sysv': [libc.shmget(0x5EED, 0, 0), libc.semget(0x5EEE, 0, 0), libc.msgget(0x5EEF, 0)],
    # keyctl(KEYCTL_SEARCH, the user keyring, ...): -1 where no such key
    'key': libc.syscall(250, 10, -4, b'user', b'evsys-leftover', 0) if os.uname().machine == 'x86_64' else -1,
}
print('SEEN ' + json.dumps(seen))
"""


@pytest.fixture
def pool() -> Iterator[sandbox_pool.PooledBwrapRunner]:
    runner_ = sandbox_pool.PooledBwrapRunner()
    yield runner_
    runner_.close()


def _seen(pool: sandbox_pool.PooledBwrapRunner) -> dict[str, object]:
    result = run_python(LOOK_AROUND, runner=pool, limits=LIMITS)
    assert result.passed, result
    line = next(line for line in result.stdout.splitlines() if line.startswith("SEEN "))
    return json.loads(line[5:])


def _interpreter_dirs_in_tmp() -> set[str]:
    """The names in /tmp of the read-only binds of an interpreter (a venv) that lives under /tmp."""
    prefixes = (sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable)))
    reals = [PurePosixPath(os.path.realpath(p)) for p in prefixes]
    return {real.parts[2] for real in reals if len(real.parts) > 2 and real.parts[1] == "tmp"}


def _one_sandbox(pool: sandbox_pool.PooledBwrapRunner) -> sandbox_pool._Sandbox:
    boxes = [box for idle in pool._idle.values() for box in idle]
    assert len(boxes) == 1, boxes
    return boxes[0]


@pytest.mark.parametrize("ending", ["exits", "times_out"])
def test_nothing_of_a_run_reaches_the_next_run(pool: sandbox_pool.PooledBwrapRunner, ending: str) -> None:
    """Files in /tmp and /dev/shm, a daemon holding a listening socket, SysV IPC, a key: all gone for the next run."""
    tail = "" if ending == "exits" else "time.sleep(30)"
    program = LEAVE_BEHIND % {"sleep": 30, "tail": tail}
    first = run_python(program, runner=pool, limits=LIMITS, timeout=3 if ending == "exits" else 5)
    assert first.passed if ending == "exits" else first.timed_out, first
    box = _one_sandbox(pool)
    seen = _seen(pool)
    assert _one_sandbox(pool) is box and box.runs == 2  # the same sandbox ran both
    assert seen["tmp"] == sorted(["work", *_interpreter_dirs_in_tmp()])
    assert seen["shm_files"] == []
    assert seen["workdir"] == ["program.py"]
    assert seen["processes"] == []
    assert seen["connected"] is False
    assert seen["sysv"] == [-1, -1, -1]
    assert seen["key"] == -1


def test_programs_run_as_the_sandboxs_uid_and_nothing_in_the_sandbox_holds_a_capability(
    pool: sandbox_pool.PooledBwrapRunner,
) -> None:
    """As root the sandbox's supervisor and its programs run as a fresh uid; else as yours, in a user
    namespace of their own (not the scorer's). Neither the program nor the supervisor (pid 1) holds a capability."""
    program = (
        "import os\ndef status(pid):\n"
        "    return dict(l.split(':', 1) for l in open('/proc/%s/status' % pid).read().splitlines())\n"
        "me, supervisor = status('self'), status(1)\n"
        "print('CAPS', os.getuid(), os.getgid(), os.getgroups(), *(me[k].strip() for k in ('CapEff', 'CapPrm', 'CapInh',"
        " 'CapAmb', 'NoNewPrivs')), os.readlink('/proc/self/ns/user').replace(' ', ''), supervisor['Uid'].split()[0],"
        " supervisor['CapEff'].strip(), supervisor['CapPrm'].strip())\n"
        "import resource\nassert resource.getrlimit(resource.RLIMIT_MSGQUEUE) == (0, 0)  # no POSIX message queues\n"
    )
    uids = set()
    for _ in range(2):
        result = run_python(program, runner=pool, limits=LIMITS)
        assert result.passed, result
        fields = next(line for line in result.stdout.splitlines() if line.startswith("CAPS")).split()
        uid, gid = int(fields[1]), int(fields[2])
        if AS_ROOT:
            assert uid == gid and uid >= 1_900_000_000
        else:
            assert (uid, gid) == (os.getuid(), os.getgid())
            assert fields[9] != os.readlink("/proc/self/ns/user").replace(" ", "")
        assert fields[3] == "[]" and fields[4:8] == ["0000000000000000"] * 4 and fields[8] == "1"
        assert int(fields[10]) == uid and fields[11:13] == ["0000000000000000"] * 2  # the supervisor: same uid, no caps
        uids.add(uid)
    assert len(uids) == 1  # one sandbox: one uid


def test_a_run_cannot_signal_trace_or_read_the_supervisor(pool: sandbox_pool.PooledBwrapRunner) -> None:
    """The only other process the program can name is the supervisor, pid 1 (the sandbox's init, with the
    program's uid): no signal kills it, no ptrace attaches, no environment can be read."""
    program = (
        "import ctypes, os, signal\nlibc = ctypes.CDLL(None, use_errno=True)\nresults = []\n"
        "pids = sorted(({1, 2} | {int(p) for p in os.listdir('/proc') if p.isdigit()}) - {os.getpid()})\n"
        "for pid in pids:\n"
        "    if libc.ptrace(16, pid, None, None) == 0:  # PTRACE_ATTACH\n"
        "        results.append('traced')\n"
        "    try:\n        open('/proc/%d/environ' % pid).read()\n        results.append('read')\n"
        "    except OSError as exc:\n        results.append(type(exc).__name__)\n"
        "    for signum in (signal.SIGSTOP, signal.SIGINT, signal.SIGTERM, signal.SIGKILL):\n"
        "        try:\n            os.kill(pid, signum)\n"
        "        except OSError as exc:\n            results.append(type(exc).__name__)\n"
        "print('RESULTS', pids, results)\n"
    )
    result = run_python(program, runner=pool, limits=LIMITS)
    assert result.passed and "'traced'" not in result.stdout and "'read'" not in result.stdout, result
    assert "RESULTS [1] " in result.stdout, result.stdout  # (this first program is pid 2)
    assert run_python("pass", runner=pool, limits=LIMITS).passed  # the supervisor lives on, not stopped
    assert _one_sandbox(pool).runs == 2  # the same sandbox


def test_a_dead_sandbox_is_replaced(pool: sandbox_pool.PooledBwrapRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_python("pass", runner=pool, limits=LIMITS).passed
    first = _one_sandbox(pool)
    first.proc.kill()
    first.proc.wait()
    assert run_python("pass", runner=pool, limits=LIMITS).passed
    second = _one_sandbox(pool)
    assert second is not first
    monkeypatch.setattr(sandbox_pool, "RUNS_PER_SANDBOX", 2)
    assert run_python("pass", runner=pool, limits=LIMITS).passed  # its 2nd run: retired after it
    assert second.proc.poll() is not None
    assert run_python("pass", runner=pool, limits=LIMITS).passed


def test_output_limits_and_exit_status_as_in_the_plain_runner(pool: sandbox_pool.PooledBwrapRunner) -> None:
    flood = run_python("import sys\nsys.stdout.write('x' * 100000)\n", runner=pool, limits=LIMITS, max_output=1000)
    assert flood.output_exceeded and not flood.passed and len(flood.stdout) <= 1000
    failed = run_python("import sys\nsys.stderr.write('boom')\nsys.exit(3)\n", runner=pool, limits=LIMITS)
    assert failed.returncode == 3 and failed.stderr == "boom"
    with pytest.raises(ValueError, match="leaves the run directory"):
        pool.run([sys.executable, "x.py"], files={"../x.py": ""})


def test_a_program_the_sandbox_cannot_start_is_an_error_and_the_sandbox_serves_on(
    pool: sandbox_pool.PooledBwrapRunner,
) -> None:
    pool.prlimit = "/nonexistent/prlimit"  # every program starts through it: none can start
    result = run_python("pass", runner=pool, limits=LIMITS)
    assert result.returncode is None and not result.passed
    assert result.stderr.startswith("evsys sandbox: FileNotFoundError: ") and "/nonexistent/prlimit" in result.stderr
    pool.prlimit = shutil.which("prlimit")
    assert run_python("pass", runner=pool, limits=LIMITS).passed
    assert _one_sandbox(pool).runs == 2  # the same sandbox: nothing of the failed start was left


def test_the_pool_is_the_default_and_per_program_stays_selectable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(runner.RUNNER_ENV, raising=False)
    monkeypatch.setenv(sandbox.SANDBOX_ENV, "bwrap")
    monkeypatch.delenv(sandbox.BWRAP_MODE_ENV, raising=False)
    assert isinstance(runner.get_runner(), sandbox_pool.PooledBwrapRunner)
    monkeypatch.setenv(sandbox.BWRAP_MODE_ENV, "per-program")
    chosen = runner.get_runner()
    assert type(chosen) is sandbox.BwrapRunner
    assert run_python("pass", runner=chosen, limits=LIMITS).passed
    monkeypatch.setenv(sandbox.BWRAP_MODE_ENV, "pooled")
    with pytest.raises(EvsysError, match="EVSYS_VERIFIER_BWRAP: unknown mode 'pooled'; expected one of pool, "):
        runner.get_runner()


def test_where_the_pool_cannot_run_programs_get_a_bwrap_each(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(runner.RUNNER_ENV, raising=False)
    monkeypatch.delenv(sandbox.BWRAP_MODE_ENV, raising=False)
    monkeypatch.setenv(sandbox.SANDBOX_ENV, "bwrap")
    monkeypatch.setattr(sandbox, "_RUNNERS", {})
    monkeypatch.setattr(sandbox_pool, "pool_problem", lambda: "bwrap: Unknown cap: CAP_SETUID")
    with caplog.at_level("WARNING", logger="evsys.verifiers"):
        chosen = runner.get_runner()
    assert type(chosen) is sandbox.BwrapRunner
    assert [r.getMessage() for r in caplog.records] == [
        "the pooled bubblewrap sandbox cannot run (bwrap: Unknown cap: CAP_SETUID): one bwrap per program"
    ]


@pytest.mark.parametrize("root", [True, False])
def test_the_supervisor_is_the_sandboxs_pid_1_as_root_with_a_uid_of_its_own(
    monkeypatch: pytest.MonkeyPatch, root: bool
) -> None:
    """The pool is the default for root and ordinary users alike; its supervisor is the sandbox's pid 1 (no
    signal from a program reaches it), read-only everywhere but /tmp. Root's sandbox keeps the root user
    namespace and lets the supervisor switch to a fresh uid (two capabilities, which the switch drops);
    an ordinary user's has a user namespace of its own and no capability at all."""
    monkeypatch.setattr(os, "geteuid", lambda: 0 if root else 1000)
    monkeypatch.delenv(sandbox.BWRAP_MODE_ENV, raising=False)
    assert sandbox.bwrap_mode() == "pool"
    command = sandbox_pool.PooledBwrapRunner()._command(sys.executable, 1 << 20)
    assert "--as-pid-1" in command and ("--unshare-all" in command) is not root
    assert command[command.index("--remount-ro") : command.index("--remount-ro") + 4] == [
        "--remount-ro",
        "/dev",
        "--remount-ro",
        "/",
    ]
    caps = [command[i + 1] for i, arg in enumerate(command) if arg == "--cap-add"]
    uid = json.loads(command[-1])["uid"]
    if root:
        assert caps == ["CAP_SETUID", "CAP_SETGID"] and uid >= 1_900_000_000
    else:
        assert caps == [] and uid is None


def test_a_sandbox_that_ended_while_idle_costs_no_program(pool: sandbox_pool.PooledBwrapRunner) -> None:
    assert run_python("pass", runner=pool, limits=LIMITS).passed
    box = _one_sandbox(pool)
    supervisor = box.proc.pid  # bwrap, then its descendants down to the supervisor (idle: the only leaf)
    while True:
        with open(f"/proc/{supervisor}/task/{supervisor}/children") as handle:
            children = handle.read().split()
        if not children:
            break
        (supervisor,) = map(int, children)
    assert supervisor != box.proc.pid
    os.kill(supervisor, signal.SIGKILL)
    box.proc.wait()
    box.proc.poll = lambda: None  # type: ignore[method-assign]  # as if it ended just after it was taken
    result = run_python("pass", runner=pool, limits=LIMITS)
    assert result.passed, result
    assert _one_sandbox(pool) is not box
