"""``evsys.testing.check_plugin`` against every built-in plugin module, the example package and the
test fixture, and the one-line failures it gives a broken plugin module."""

from __future__ import annotations

import importlib
import types
from pathlib import Path

import pytest

from evsys.testing import ContractError, check_plugin

ROOT = Path(__file__).resolve().parents[1]
BUILTINS = [
    ("evsys-algorithms", "evsys.algorithms.plugin"),
    ("evsys-backends", "evsys.backends.plugin"),
    ("evsys-data", "evsys.data.plugin"),
    ("evsys-logging", "evsys.logging.plugin"),
    ("evsys-verifiers", "evsys.verifiers.plugin"),
]


@pytest.mark.parametrize(("distribution", "module"), BUILTINS)
def test_builtin_plugins_keep_the_plugin_contract(distribution: str, module: str) -> None:
    registry = check_plugin(importlib.import_module(module), distribution)
    assert {r.distribution for r in registry.registrations()} == {distribution}


def test_example_and_fixture_plugins_keep_the_plugin_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "examples" / "plugin_package" / "src"))
    monkeypatch.syspath_prepend(str(ROOT / "tests" / "plugin_fixture" / "src"))
    acme = check_plugin(importlib.import_module("evsys_acme.plugin"), "evsys-acme")
    assert acme.names("callback") == ["acme_event_log"]
    mine = check_plugin(importlib.import_module("evsys_my_algo.plugin"), "evsys-my-algo")
    assert mine.get("algorithm", "my_algo").meta["templates"] == {"prompt_template": frozenset()}


def _plugin(body: str) -> types.ModuleType:
    module = types.ModuleType("contract_plugin")
    exec("from evsys.schema.plugins import hookimpl\n\n@hookimpl\ndef evsys_register(register):\n    " + body, module.__dict__)
    return module


def test_check_plugin_names_the_broken_promise() -> None:
    with pytest.raises(ContractError) as caught:
        check_plugin(_plugin('register.transform("t", "evsys.data.jsonl:read_jsnl")'), "my-pkg")
    assert str(caught.value) == (
        "transform 't' of plugin my-pkg has a broken target evsys.data.jsonl:read_jsnl: "
        "module 'evsys.data.jsonl' has no attribute 'read_jsnl' (did you mean 'read_jsonl'?)"
    )
    backend = 'from evsys.schema.params import NoParams\n    register.backend("b", "evsys.data.jsonl:read_jsonl", params=NoParams, checker="evsys.data.jsonl:chek")'
    with pytest.raises(ContractError) as caught:
        check_plugin(_plugin(backend), "my-pkg")
    assert str(caught.value).startswith("backend 'b' of plugin my-pkg has a broken checker evsys.data.jsonl:chek: module 'evsys.data.jsonl' has no attribute 'chek'")
    with pytest.raises(ContractError, match=r"^plugin my-pkg is broken: evsys_register: ZeroDivisionError"):
        check_plugin(_plugin("1 / 0"), "my-pkg")
    with pytest.raises(ContractError, match=r"^plugin my-pkg registers nothing"):
        check_plugin(_plugin("pass"), "my-pkg")
