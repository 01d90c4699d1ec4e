"""``evsys plugins`` and ``evsys schema`` on a registry built in the test."""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evsys.cli.main import main
from evsys.cli.plugins_cmd import plugins_report, render_plugins
from evsys.schema.params import NoParams
from evsys.schema.plugins import build_registry, hookimpl, reset_default_registry
from evsys.schema.registry import BrokenPlugin, PluginRegistry
from evsys.schema.schema_export import SCHEMA_FILES


def _registry() -> PluginRegistry:
    module = types.ModuleType("listing_plugin")

    @hookimpl
    def evsys_register(register: Any) -> None:
        register.backend("back", "x:Back", params=NoParams, description="A backend.")
        register.metric("accuracy", "x:acc", description="Fraction passing.")

    module.evsys_register = evsys_register  # type: ignore[attr-defined]
    registry = build_registry(plugins=[("listing-plugin", module)], autoload=False)
    registry.broken.append(BrokenPlugin("oops", "evsys-oops", "1.2", "ImportError: nope"))
    return registry


@pytest.fixture
def registry() -> Iterator[PluginRegistry]:
    registry = _registry()
    reset_default_registry(registry)
    yield registry
    reset_default_registry()


def test_table(registry: PluginRegistry) -> None:
    assert render_plugins(registry).splitlines() == [
        "KIND     NAME      PACKAGE         VERSION  DESCRIPTION",
        "backend  back      listing-plugin  -        A backend.",
        "metric   accuracy  listing-plugin  -        Fraction passing.",
        "",
        "Broken plugins (1): their names are not registered",
        "NAME  PACKAGE     VERSION  ERROR",
        "oops  evsys-oops  1.2      ImportError: nope",
    ]


def test_json(registry: PluginRegistry, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == plugins_report(registry)
    assert plugins_report(registry)["broken"] == [
        {"name": "oops", "distribution": "evsys-oops", "version": "1.2", "error": "ImportError: nope"}
    ]


def test_schema_to_stdout_and_file(
    registry: PluginRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["definitions"]["BackendSpec"]["properties"]["kind"]["enum"] == ["back"]
    assert main(["schema", "-o", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text()) == schema


def test_schema_all(registry: PluginRegistry, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "--all"]) == 2
    assert "--all writes several files: give a directory with -o DIR" in capsys.readouterr().err
    assert main(["schema", "--all", "-o", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(SCHEMA_FILES)
    assert main(["schema", "-o", str(tmp_path / "no" / "dir" / "s.json")]) == 2
