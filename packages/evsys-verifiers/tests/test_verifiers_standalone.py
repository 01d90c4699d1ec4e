"""evsys-verifiers installs and works alone: a fresh venv with only evsys-schema and evsys-verifiers.

Builds the venv with ``python -m venv`` (no pip inside: the outer pip installs into it with
``--python``, reusing its wheel cache), installs the two packages from this checkout plus pytest,
checks that ``import torch`` fails there, and runs this package's tests in it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

INNER = "EVSYS_VERIFIERS_STANDALONE_INNER"
PACKAGE = Path(__file__).resolve().parents[1]
REPO = PACKAGE.parents[1]


@pytest.mark.skipif(os.environ.get(INNER) == "1", reason="already inside the standalone venv")
def test_package_works_in_a_fresh_venv_without_torch(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    targets = [str(REPO / "packages" / "evsys-schema"), str(PACKAGE), "pytest"]
    quiet = ["--quiet", "--disable-pip-version-check"]
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    # the outer pip installs into the bare venv (pip >= 22.3), reusing its cache; else a venv with its own pip
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", *quiet, *targets],
        capture_output=True, text=True, timeout=480,
    )  # fmt: skip
    if install.returncode != 0 and "no such option" in install.stderr:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
        install = subprocess.run(
            [str(python), "-m", "pip", "install", *quiet, *targets], capture_output=True, text=True, timeout=480
        )
    assert install.returncode == 0, install.stderr[-3000:]

    torch = subprocess.run([str(python), "-c", "import torch"], capture_output=True, text=True, timeout=60)
    assert torch.returncode != 0 and "No module named 'torch'" in torch.stderr

    where = subprocess.run(
        [str(python), "-c", "import evsys.verifiers, transformers"], capture_output=True, text=True, timeout=60
    )
    assert "No module named 'transformers'" in where.stderr

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env[INNER] = "1"
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    tests = subprocess.run(
        [
            str(python), "-m", "pytest", str(PACKAGE / "tests"), "-q", "-x",
            "-o", "addopts=", "--import-mode=importlib", "-p", "no:cacheprovider",
        ],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert tests.returncode == 0, tests.stdout[-4000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout

    origin = subprocess.run(
        [str(python), "-c", "import evsys.verifiers; print(evsys.verifiers.__file__)"],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert str(venv) in origin.stdout  # the installed copy, not the checkout

    script = subprocess.run([str(venv / "bin" / "evsys-verify"), "--help"], capture_output=True, text=True, timeout=60)
    assert script.returncode == 0 and "PREDICTIONS" in script.stdout.upper()
