"""The published JSON Schemas are the contract: fresh, documented, and agreeing with the pydantic models.

- ``schemas/`` equals what the built-in plugins generate (``evsys schema --all -o schemas``);
- every property of every schema has a description (editors show it on hover);
- every document of ``tests/schema_corpus/<schema>/{good,bad}/`` gets the same verdict from
  jsonschema (Draft7Validator on ``schemas/*.json``) as from the pydantic models plus params
  validation, and the verdict its directory names. ``semantic/`` holds configs the schema
  accepts but validation rejects, by checks JSON Schema cannot express (documented in docs/config.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import TypeAdapter, ValidationError

from evsys.cli.schema_cmd import REGENERATE_COMMAND, builtin_registry
from evsys.schema.errors import ConfigError
from evsys.schema.registry import PluginRegistry
from evsys.schema.rows import ChatExample, MetricsRow, PredictionRow, PromptExample, TaskRow
from evsys.schema.schema_export import SCHEMA_FILES, all_schemas, dump_schema
from evsys.schema.validation import validate_document
from evsys.schema.yaml_source import parse_yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "schemas"
CORPUS = Path(__file__).parent / "schema_corpus"


@cache
def registry() -> PluginRegistry:
    return builtin_registry()


def test_committed_schemas_are_fresh() -> None:
    generated = {name: dump_schema(schema) for name, schema in all_schemas(registry()).items()}
    assert sorted(generated) == sorted(SCHEMA_FILES)
    stale = []
    for name, text in generated.items():
        path = SCHEMAS / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    extra = sorted(p.name for p in SCHEMAS.glob("*.json") if p.name not in generated)
    assert not stale and not extra, (
        f"schemas/ is out of date (stale: {stale}, not generated: {extra}); regenerate from the repository root "
        f"with: {REGENERATE_COMMAND}"
    )


def _properties(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(owner, property, subschema) of the top level and every definition (not of if/then rules)."""
    for owner, node in [("<root>", schema), *schema.get("definitions", {}).items()]:
        for name, sub in node.get("properties", {}).items():
            yield owner, name, sub


@pytest.mark.parametrize("name", sorted(SCHEMA_FILES))
def test_every_property_has_a_description(name: str) -> None:
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    missing = [f"{owner}.{prop}" for owner, prop, sub in _properties(schema) if not sub.get("description")]
    assert not missing, f"{name}: properties without a description: {missing}"
    for owner, node in schema.get("definitions", {}).items():
        assert node.get("description"), f"{name}: definition {owner} has no description"


def _schema(name: str) -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _pydantic(model: Any) -> Callable[[Any], bool]:
    adapter = TypeAdapter(model)

    def verdict(document: Any) -> bool:
        try:
            adapter.validate_python(document)
        except ValidationError:
            return False
        return True

    return verdict


def _config_verdict(path: Path) -> tuple[Any, bool]:
    document = parse_yaml(path.read_text(encoding="utf-8"), path.name)
    try:
        validate_document(document, registry())
    except ConfigError:
        return document.data, False
    return document.data, True


ROW_MODELS: dict[str, Any] = {
    "prompt_example": PromptExample,
    "sft_example": PromptExample | ChatExample,
    "task": TaskRow,
    "metrics_row": MetricsRow,
    "prediction_row": PredictionRow,
}


def _cases() -> list[Any]:
    cases = []
    for path in sorted(CORPUS.glob("*/*/*")):
        kind, verdict = path.parent.parent.name, path.parent.name
        cases.append(pytest.param(kind, verdict, path, id=f"{kind}/{verdict}/{path.stem}"))
    return cases


def test_corpus_covers_every_schema() -> None:
    for name in SCHEMA_FILES:
        kind = name.removesuffix(".schema.json")
        assert list((CORPUS / kind / "good").iterdir()), kind
        assert list((CORPUS / kind / "bad").iterdir()), kind


@pytest.mark.parametrize(("kind", "verdict", "path"), _cases())
def test_schema_and_models_agree(kind: str, verdict: str, path: Path) -> None:
    validator = _schema(f"{kind}.schema.json")
    if kind == "run_config":
        document, models_accept = _config_verdict(path)
    else:
        document = json.loads(path.read_text(encoding="utf-8"))
        models_accept = _pydantic(ROW_MODELS[kind])(document)
    schema_errors = [e.message for e in validator.iter_errors(document)]
    schema_accepts = not schema_errors
    if verdict == "semantic":
        assert schema_accepts, f"the schema should accept {path.name}: {schema_errors}"
        assert not models_accept, f"validation should reject {path.name}"
        return
    expected = verdict == "good"
    assert models_accept == expected, f"pydantic + params validation: {'accepted' if models_accept else 'rejected'}"
    assert schema_accepts == expected, f"jsonschema: {schema_errors or 'accepted'}"
