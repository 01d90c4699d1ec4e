"""Editors: every example config names a JSON Schema that accepts it (plain draft-07 validation), and
.vscode/settings.json maps every example config to a schema.

examples/plugin_package/config.yaml uses the plugin's callback, which the committed schemas (the
built-ins only) do not know: it points at examples/plugin_package/acme.schema.json, the schema
composed with the plugin (``evsys schema -o ...`` with it installed). Regenerate that file with
``python tests/test_ux_editor_schemas.py``.
"""

from __future__ import annotations

import fnmatch
import json
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

ROOT = Path(__file__).resolve().parents[1]
ACME_SCHEMA = ROOT / "examples" / "plugin_package" / "acme.schema.json"
MODELINE = re.compile(r"^#\s*yaml-language-server:\s*\$schema=(\S+)\s*$")


def example_configs() -> list[Path]:
    """Every run config under examples/ (YAML files with an ``algorithm`` key), outputs excluded."""
    found = []
    for path in sorted((ROOT / "examples").rglob("*.yaml")):
        if "outputs" in path.parts:
            continue
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(document, dict) and "algorithm" in document:
            found.append(path)
    return found


def acme_schema() -> dict[str, Any]:
    """The run config schema composed with the built-ins and examples/plugin_package."""
    sys.path.insert(0, str(ROOT / "examples" / "plugin_package" / "src"))
    try:
        import evsys_acme.plugin

        from evsys.cli.schema_cmd import BUILTIN_DISTRIBUTIONS
        from evsys.schema.plugins import ENTRY_POINT_GROUP, build_registry
        from evsys.schema.schema_export import config_schema

        plugins = [
            (ep.dist.name, ep.load())
            for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)
            if ep.dist is not None and ep.dist.name in BUILTIN_DISTRIBUTIONS
        ]
        registry = build_registry(plugins=[*plugins, ("evsys-acme", evsys_acme.plugin)], autoload=False)
        return config_schema(registry)
    finally:
        sys.path.remove(str(ROOT / "examples" / "plugin_package" / "src"))


def test_there_are_example_configs() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in example_configs()}
    assert {"examples/sdft_walkthrough/config.yaml", "examples/sdft_walkthrough/config.local.yaml", "examples/plugin_package/config.yaml"} <= names


@pytest.mark.parametrize("config", example_configs(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_example_config_validates_against_its_schema(config: Path) -> None:
    first = config.read_text(encoding="utf-8").splitlines()[0]
    match = MODELINE.match(first)
    assert match, f"{config}: first line must be '# yaml-language-server: $schema=<relative path>'"
    schema_path = (config.parent / match.group(1)).resolve()
    assert schema_path.is_file(), f"{config}: $schema points at a missing file {schema_path}"
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    Draft7Validator.check_schema(schema)
    errors = sorted(Draft7Validator(schema).iter_errors(yaml.safe_load(config.read_text(encoding="utf-8"))), key=str)
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_plugin_schema_is_fresh() -> None:
    from evsys.schema.schema_export import dump_schema

    assert ACME_SCHEMA.read_text(encoding="utf-8") == dump_schema(acme_schema()), "stale: run python tests/test_ux_editor_schemas.py"


def test_plugin_config_needs_the_plugin_schema() -> None:
    """The committed schema rejects the plugin's callback kind: that is why the plugin ships its own."""
    schema = json.loads((ROOT / "schemas" / "run_config.schema.json").read_text(encoding="utf-8"))
    config = yaml.safe_load((ROOT / "examples" / "plugin_package" / "config.yaml").read_text(encoding="utf-8"))
    assert any("acme_event_log" in e.message for e in Draft7Validator(schema).iter_errors(config))


def test_vscode_maps_every_example_config_to_a_schema() -> None:
    settings = json.loads((ROOT / ".vscode" / "settings.json").read_text(encoding="utf-8"))
    mapping: dict[str, list[str]] = settings["yaml.schemas"]
    for schema in mapping:
        assert (ROOT / schema).is_file(), schema
    for config in example_configs():
        relative = config.relative_to(ROOT).as_posix()
        assert any(fnmatch.fnmatch(relative, glob) for globs in mapping.values() for glob in globs), f"{relative} is not mapped in .vscode/settings.json"


if __name__ == "__main__":
    from evsys.schema.schema_export import dump_schema

    ACME_SCHEMA.write_text(dump_schema(acme_schema()), encoding="utf-8")
    print(f"wrote {ACME_SCHEMA.relative_to(ROOT)}")
