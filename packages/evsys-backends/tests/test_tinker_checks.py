"""``validate --deep`` checks, params and registration of the tinker backend (no SDK import needed)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from evsys.backends.tinker import checks
from evsys.backends.tinker.checks import check_model_name
from evsys.backends.tinker.credentials import credential_source
from evsys.backends.tinker.models import SUPPORTED_MODELS
from evsys.backends.tinker.params import TinkerBackendParams


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("TINKER_API_KEY", raising=False)
    monkeypatch.delenv("TINKER_CREDENTIAL_CMD", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_the_pages_model_with_a_key_has_no_problems(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINKER_API_KEY", "tml-x")
    assert "Qwen/Qwen3.5-4B" in SUPPORTED_MODELS
    assert check_model_name("Qwen/Qwen3.5-4B", TinkerBackendParams()) == []


def test_unknown_model_is_a_warning_with_a_suggestion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINKER_API_KEY", "tml-x")
    [problem] = check_model_name("Qwen/Qwen3.5-4b", None)
    assert problem.severity == "warning"
    assert problem.field == "model.name"
    assert "did you mean 'Qwen/Qwen3.5-4B'?" in problem.message


def test_missing_key_is_a_warning(no_credentials: Path) -> None:
    [problem] = check_model_name("Qwen/Qwen3-8B", TinkerBackendParams())
    assert problem.severity == "warning"
    assert problem.message.startswith("TINKER_API_KEY is not set")


def test_missing_sdk_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINKER_API_KEY", "tml-x")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        checks.importlib.util, "find_spec", lambda name, *a: None if name == "tinker" else real(name, *a)
    )
    [problem] = check_model_name("Qwen/Qwen3-8B", TinkerBackendParams())
    assert problem.severity == "error"
    assert "pip install 'evsys-backends[tinker]'" in problem.message


def test_credential_sources(no_credentials: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert credential_source() is None
    store = no_credentials / ".tinker" / "credentials.json"
    store.parent.mkdir()
    store.write_text(json.dumps({"version": 1, "default": None, "keys": {"a": {"key": "tml-a"}}}))
    assert credential_source() is None  # keys but no default
    store.write_text("not json")
    assert credential_source() is None
    store.write_text(json.dumps({"version": 1, "default": "a", "keys": {"a": {"key": "tml-a"}}}))
    assert credential_source() == str(store)
    monkeypatch.setenv("TINKER_CREDENTIAL_CMD", "print-token")
    assert credential_source() == "TINKER_CREDENTIAL_CMD"
    monkeypatch.setenv("TINKER_API_KEY", "tml-b")
    assert credential_source() == "TINKER_API_KEY"


def test_params_are_strict_and_documented() -> None:
    for name, info in TinkerBackendParams.model_fields.items():
        assert info.description, name
    assert "api_key" not in TinkerBackendParams.model_fields
    with pytest.raises(Exception, match="extra"):
        TinkerBackendParams.model_validate({"api_key": "tml-x"})
    params = TinkerBackendParams.model_validate({"max_retries": 2, "teacher_concurrency": 8})
    assert (params.max_retries, params.teacher_concurrency, params.pipeline_optim_step) == (2, 8, True)


def test_light_modules_import_no_sdk() -> None:
    code = (
        "import sys\n"
        "import evsys.backends.tinker.params, evsys.backends.tinker.checks\n"
        "from evsys.backends.tinker.checks import check_model_name\n"
        "check_model_name('Qwen/Qwen3.5-4B', None)\n"
        "assert 'tinker' not in sys.modules, 'SDK imported'\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registered_with_its_checker_and_target() -> None:
    from evsys.backends import plugin
    from evsys.schema.plugins import build_registry
    from evsys.schema.registry import load_object

    registry = build_registry([("evsys-backends", plugin)], autoload=False)
    registration = registry.get("backend", "tinker")
    assert registration.params is TinkerBackendParams
    assert load_object(registration.meta["checker"]) is check_model_name
    from evsys.backends.tinker.backend import TinkerBackend

    assert registration.load() is TinkerBackend
