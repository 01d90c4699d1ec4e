"""The sandbox an ordinary user gets, checked from root: the pool's suite, the attack suite and the runner's
tests run as uid 65534 (:func:`evsys.verifiers.testing.run_unprivileged`).

As root, programs run in the pool that gives each one a uid of its own; an ordinary user's pool gives each
program fresh user, mount, pid and IPC namespaces instead. CI runs as root, so without this test that
second pool would go unchecked. Skipped, with the reason, where bubblewrap or unprivileged user
namespaces are missing, or where this process is not root (the suites then run unprivileged directly).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from evsys.verifiers import sandbox
from evsys.verifiers.testing import UNPRIVILEGED_UID, run_unprivileged, shared_directory, unprivileged_problem

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux namespaces and /proc"),
    pytest.mark.skipif(sandbox.bwrap_problem() is not None, reason=f"needs bubblewrap: {sandbox.bwrap_problem()}"),
    pytest.mark.skipif(
        sandbox.bwrap_problem() is None and unprivileged_problem() is not None,
        reason=f"cannot run as an unprivileged uid: {unprivileged_problem()}",
    ),
]

HERE = Path(__file__).resolve().parent
SUITES = ("test_verifiers_sandbox_pool.py", "test_verifiers_sandbox.py", "test_verifiers_runner.py")
# the pool's own suite, every attack against the pool, the runner's tests under the pool, a harmless program
SELECTION = "pool or harmless"
PROBE = (
    "from evsys.verifiers.sandbox import bwrap_problem\n"
    "from evsys.verifiers.sandbox_pool import pool_problem\n"
    "print(bwrap_problem() or pool_problem() or 'ok')\n"
)


def test_the_pooled_sandbox_contains_every_attack_for_an_ordinary_user() -> None:
    with shared_directory() as home:
        probe = run_unprivileged(["-c", PROBE], home=home, timeout=120)
        assert probe.returncode == 0, probe.stderr
        if probe.stdout.strip() != "ok":  # bubblewrap without unprivileged user namespaces, say
            pytest.skip(f"as uid {UNPRIVILEGED_UID} the pooled sandbox cannot run: {probe.stdout.strip()}")
        for name in SUITES:  # copies the uid can read (this checkout may not be), in a directory it can write
            shutil.copy(HERE / name, os.path.join(home, name))
        args = ["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-o", "addopts=", "-k", SELECTION]
        args += [f"--basetemp={home}/pytest", *SUITES]
        result = run_unprivileged(args, home=home, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    summary = output.strip().splitlines()[-1]
    counts = {word: int(number) for number, word in re.findall(r"(\d+) (\w+)", summary)}
    assert set(counts) == {"passed", "deselected"}, summary  # nothing failed, nothing skipped
    assert counts["passed"] >= 25, summary  # the pool's suite (10), 8 attacks, the runner's tests, ...


VENV_PROBE = """
import json, subprocess, sys
venv = sys.argv[1]
scorer = (
    "import json, sys\\n"
    "from evsys.verifiers.runner import run_python\\n"
    "from evsys.verifiers.sandbox_pool import PooledBwrapRunner\\n"
    "pool = PooledBwrapRunner()\\n"
    "program = (\\"import os, sys\\\\ntop = '/tmp/' + sys.prefix.split('/')[2]\\\\n\\"\\n"
    "    \\"print('SEEN', sys.prefix, sorted(os.listdir('/tmp')), sorted(os.listdir(top)))\\\\n\\"\\n"
    "    \\"open('/tmp/left-behind', 'w')\\\\nopen(top + '/left-inside', 'w')  # bubblewrap made it: the user's\\\\n\\")\\n"
    "seen = [run_python(program, runner=pool).stdout.split('\\\\n')[0] for _ in range(2)]\\n"
    "print(json.dumps([sys.prefix, seen]))\\n"
)
done = subprocess.run([venv + '/bin/python', '-c', scorer], capture_output=True, text=True, timeout=300)
print(done.stdout.strip().splitlines()[-1] if done.returncode == 0 else 'FAILED ' + done.stderr)
"""


def test_an_interpreter_under_tmp_stays_visible_and_the_rest_of_tmp_is_wiped() -> None:
    """A venv under /tmp (a CI checkout's): its read-only bind stays in the sandbox's /tmp for every run, and
    what one run leaves in /tmp, even in the directories bubblewrap made for the bind, is gone for the next."""
    with shared_directory() as home:
        made = run_unprivileged(["-m", "venv", "--without-pip", f"{home}/venv"], home=home, timeout=120)
        assert made.returncode == 0, made.stderr
        result = run_unprivileged(["-c", VENV_PROBE, f"{home}/venv"], home=home, timeout=600)
        assert result.returncode == 0 and not result.stdout.startswith("FAILED"), result.stdout + result.stderr
        prefix, seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert prefix == f"{home}/venv"
    top = home.split("/")[2]  # the sandbox binds the venv at its own path: /tmp/<this directory>/venv
    assert seen == [f"SEEN {prefix} {sorted([top, 'work'])} {['venv']}"] * 2, seen
