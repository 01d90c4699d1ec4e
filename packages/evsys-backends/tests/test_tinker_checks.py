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


# -- the model catalog ----------------------------------------------------------------------------


def _capabilities(*rows: tuple[str, int, bool]) -> object:
    from tinker import types

    return types.GetServerCapabilitiesResponse(
        supported_models=[
            types.SupportedModel(model_name=name, max_context_length=ctx, trainable=trainable, sampleable=True)
            for name, ctx, trainable in rows
        ]
    )


def test_retired_models_are_one_line_errors_naming_the_replacement(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TINKER_API_KEY", "tml-x")
    monkeypatch.setenv("EVSYS_CACHE_DIR", str(tmp_path))
    [problem] = check_model_name("Qwen/Qwen3-30B-A3B-Instruct-2507", None)
    assert problem.severity == "error" and problem.field == "model.name"
    assert problem.message == (
        "Tinker retired 'Qwen/Qwen3-30B-A3B-Instruct-2507' on 2026-06-12; "
        "its recommended replacement: Qwen/Qwen3.6-35B-A3B (non-thinking mode)"
    )
    [chained] = check_model_name("Qwen/Qwen3.5-27B", None)
    assert "Qwen/Qwen3.6-27B was retired in turn on 2026-09-02: Qwen/Qwen3.8-27B" in chained.message
    from evsys.backends.tinker.models import RETIRED

    assert not set(RETIRED) & set(SUPPORTED_MODELS)


def test_the_service_list_is_fetched_once_cached_and_read_by_validate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("tinker")
    from evsys.backends.tinker.catalog import CACHE_TTL_S, cache_path, load_catalog

    monkeypatch.setenv("TINKER_API_KEY", "tml-x")
    monkeypatch.setenv("EVSYS_CACHE_DIR", str(tmp_path))
    calls: list[int] = []

    def fetch() -> object:
        calls.append(1)
        return _capabilities(("Qwen/Qwen3.5-4B", 32768, True), ("Qwen/Qwen9-1B", 8192, False))

    catalog = load_catalog(fetch, now=1000.0)
    assert catalog.live and catalog.get("Qwen/Qwen3.5-4B").max_context_length == 32768  # type: ignore[union-attr]
    assert cache_path().is_file()
    load_catalog(fetch, now=1000.0 + CACHE_TTL_S - 1)
    assert len(calls) == 1  # fresh cache: not fetched again
    load_catalog(fetch, now=1000.0 + CACHE_TTL_S + 1)
    assert len(calls) == 2  # stale: fetched again
    load_catalog(fetch)  # now
    # validate reads the cache (no fetch): the service's own verdicts are errors
    assert check_model_name("Qwen/Qwen3.5-4B", None) == []
    [untrainable] = check_model_name("Qwen/Qwen9-1B", None)
    assert untrainable.severity == "error" and "sampling only" in untrainable.message
    [missing] = check_model_name("Qwen/Qwen3.8-27B", None)
    assert missing.severity == "error" and missing.message.startswith("Tinker does not serve 'Qwen/Qwen3.8-27B'")


def test_a_failed_fetch_falls_back_to_the_static_list(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from evsys.backends.tinker.catalog import load_catalog

    monkeypatch.setenv("EVSYS_CACHE_DIR", str(tmp_path))

    def fetch() -> object:
        raise ConnectionError("offline")

    catalog = load_catalog(fetch)
    assert not catalog.live and catalog.names == SUPPORTED_MODELS


def test_the_backend_refuses_a_model_the_service_does_not_serve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("tinker")
    from evsys.backends.tinker.backend import TinkerBackend
    from evsys.backends.tinker.simulator import SimulatedService
    from evsys.schema.errors import EvsysError
    from evsys.schema.protocols import BackendSetup

    monkeypatch.setenv("EVSYS_CACHE_DIR", str(tmp_path))
    service = SimulatedService()
    with pytest.raises(EvsysError, match=r"^Tinker does not serve 'Qwen/Qwen3.5-4B' \(per the Tinker service's list"):
        TinkerBackend(
            BackendSetup(model_name="Qwen/Qwen3.5-4B", lora_rank=1),
            service_client=service,
            fetch_capabilities=lambda: _capabilities(("Qwen/Qwen3.8-27B", 65536, True)),
        )
    assert service.training_clients == []  # refused before any session request
