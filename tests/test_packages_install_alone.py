"""Each distribution installs alone into a fresh venv with only its declared dependencies, and imports.

The light ones (evsys-schema, -data, -logging, -algorithms) must not pull in torch; evsys-verifiers'
own test does the same for it and runs its suite there. evsys-backends and evsys-cli get torch pinned
to the CPU wheel (``torch==2.13.0``), as the README's setup does, so no CUDA build is ever pulled.
Sibling EvSys packages are not on PyPI, so the ones a package declares are passed from this checkout.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: distribution -> (EvSys distributions it declares, import check, torch expected)
PACKAGES = {
    "schema": ((), "import evsys.schema, evsys.schema.plugins, evsys.testing", False),
    "data": (("schema",), "import evsys.data; from evsys.data import register_transform", False),
    "logging": (("schema",), "import evsys.logging.local, evsys.logging.console, evsys.logging.tensorboard_tracker, evsys.logging.wandb_tracker, evsys.logging.mlflow_tracker", False),
    "algorithms": (("schema", "data", "verifiers"), "import evsys.algorithms.plugin, evsys.algorithms.sdft.algorithm", False),
    "backends": (("schema",), "import evsys.backends.local.backend, evsys.backends.plugin", True),
    "cli": (("schema", "data", "verifiers", "logging", "algorithms", "backends"), "import evsys.cli; from evsys.cli.main import cli", True),
}


def _pip_install(venv: Path, targets: list[str]) -> subprocess.CompletedProcess[str]:
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    return subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--disable-pip-version-check", *targets],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_package_installs_alone_and_imports(package: str, tmp_path: Path) -> None:
    siblings, check, needs_torch = PACKAGES[package]
    targets = [str(REPO / "packages" / f"evsys-{name}") for name in (*siblings, package)]
    if needs_torch:
        targets.insert(0, "torch==2.13.0")
    install = _pip_install(tmp_path / "venv", targets)
    assert install.returncode == 0, install.stderr[-3000:]
    python = str(tmp_path / "venv" / "bin" / "python")
    imported = subprocess.run([python, "-c", f"{check}; import sys; print('torch' in sys.modules)"], capture_output=True, text=True, timeout=300)
    assert imported.returncode == 0, imported.stderr[-3000:]
    torch_present = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True, timeout=300)
    if needs_torch:
        assert torch_present.stdout.strip() == "2.13.0+cpu", torch_present.stdout + torch_present.stderr
    else:
        assert "No module named 'torch'" in torch_present.stderr
        assert imported.stdout.strip() == "False"
    if package == "cli":
        version = subprocess.run([str(tmp_path / "venv" / "bin" / "evsys"), "--version"], capture_output=True, text=True, timeout=300)
        assert version.returncode == 0 and "evsys" in version.stdout
