"""Bad configs and data files through the real CLI: the exact lines a user sees, exit 1, no traceback.

Each directory of ``tests/bad_inputs/`` is one case: a ``config.yaml`` (and the data files it
names), a ``README`` saying what is wrong, optional ``args.txt`` (default ``validate config.yaml
--deep``) and ``expected.txt``, the exact stderr (``{cwd}`` stands for the case directory, since
config paths are relative to the working directory). ``good_baseline`` is the valid config the
others break; its expected.txt is the stdout. The tinker backend's API-key warning is silenced
with a dummy TINKER_API_KEY (the key is only checked for presence, offline).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from evsys.cli.main import main
from evsys.schema.plugins import DISABLE_AUTOLOAD_ENV, reset_default_registry

CASES = Path(__file__).parent / "bad_inputs"
ALL = sorted(p.name for p in CASES.iterdir() if p.is_dir())


def _args(case: Path) -> list[str]:
    args_file = case / "args.txt"
    return (
        shlex.split(args_file.read_text(encoding="utf-8"))
        if args_file.exists()
        else ["validate", "config.yaml", "--deep"]
    )


def _expected(case: Path) -> str:
    return (case / "expected.txt").read_text(encoding="utf-8").replace("{cwd}", str(case))


@pytest.fixture(autouse=True)
def _environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINKER_API_KEY", "test-key")
    monkeypatch.delenv(DISABLE_AUTOLOAD_ENV, raising=False)
    reset_default_registry()


def test_there_are_enough_cases() -> None:
    assert len([name for name in ALL if name != "good_baseline"]) >= 25
    for name in ALL:
        assert (CASES / name / "expected.txt").is_file(), name
        assert (CASES / name / "README").is_file(), name


@pytest.mark.parametrize("name", ALL)
def test_case(name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    case = CASES / name
    monkeypatch.chdir(case)
    code = main(_args(case))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if name == "good_baseline":
        assert (code, err) == (0, "")
        assert out == _expected(case)
        return
    assert code == 1
    assert out == ""
    assert err == _expected(case)


@pytest.mark.parametrize("name", ["duplicate_key", "unknown_verifier_fn", "several_errors_at_once"])
def test_case_in_a_subprocess(name: str) -> None:
    """The installed console script, as a user runs it."""
    case = CASES / name
    evsys = Path(sys.executable).with_name("evsys")
    command = [str(evsys)] if evsys.exists() else [sys.executable, "-m", "evsys.cli.main"]
    env = {**os.environ, "TINKER_API_KEY": "test-key"}
    env.pop(DISABLE_AUTOLOAD_ENV, None)
    done = subprocess.run([*command, *_args(case)], cwd=case, capture_output=True, text=True, env=env, check=False)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == _expected(case)


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate"]) == 2
    assert "Missing argument 'CONFIG'" in capsys.readouterr().err
    assert main(["validate", "x.yaml", "--deeep"]) == 2
    assert "No such option '--deeep'" in capsys.readouterr().err
