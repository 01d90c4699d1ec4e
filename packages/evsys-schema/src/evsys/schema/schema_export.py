"""JSON Schema (draft-07) export of the config and row models, composed with the installed plugins.

The files in ``schemas/`` are :func:`write_schemas` of the built-in plugins; a test regenerates
them and fails when they differ. Draft-07 keeps editors' YAML language servers happy.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter

from evsys.schema.config import RunConfig
from evsys.schema.registry import PluginRegistry
from evsys.schema.rows import ChatExample, ChatPromptExample, MetricsRow, PredictionRow, PromptExample, TaskRow

DRAFT_07 = "http://json-schema.org/draft-07/schema#"
REF_TEMPLATE = "#/definitions/{model}"

#: file name -> title, for every schema EvSys publishes
SCHEMA_FILES: dict[str, str] = {
    "run_config.schema.json": "EvSys run config",
    "prompt_example.schema.json": "EvSys prompt row (SDFT, GRPO)",
    "sft_example.schema.json": "EvSys SFT example row",
    "task.schema.json": "EvSys benchmark task row",
    "metrics_row.schema.json": "EvSys metrics.jsonl row",
    "prediction_row.schema.json": "EvSys prediction row",
}


def _model_schema(model: type[BaseModel] | Any) -> dict[str, Any]:
    if isinstance(model, type) and issubclass(model, BaseModel):
        schema = model.model_json_schema(ref_template=REF_TEMPLATE)
    else:
        schema = TypeAdapter(model).json_schema(ref_template=REF_TEMPLATE)
    if "$defs" in schema:
        schema["definitions"] = schema.pop("$defs")
    return schema


def _draft7_refs(node: Any) -> Any:
    """Draft-07 ignores every keyword beside a ``$ref``: wrap such refs as ``allOf: [{$ref}]``."""
    if isinstance(node, list):
        return [_draft7_refs(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _draft7_refs(value) for key, value in node.items()}
    if "$ref" in node and len(node) > 1:
        ref = node.pop("$ref")
        return {"allOf": [{"$ref": ref}], **node}
    return node


def _finish(schema: dict[str, Any], file_name: str) -> dict[str, Any]:
    schema = _draft7_refs(schema)
    ordered = {"$schema": DRAFT_07, "title": SCHEMA_FILES[file_name]}
    for key, value in schema.items():
        if key != "title":
            ordered[key] = value
    return ordered


def _compose_kind(schema: dict[str, Any], registry: PluginRegistry, kind: str, spec_def: str) -> None:
    definitions = schema.setdefault("definitions", {})
    spec = definitions[spec_def]
    names = registry.names(kind)
    if names:
        spec["properties"]["kind"]["enum"] = names
    branches = []
    for registration in registry.registrations(kind):
        name = registry.name_of(registration)
        if registration.params is None:
            params_schema: dict[str, Any] = {"type": "object", "maxProperties": 0, "description": f"'{name}' takes no params."}
        else:
            sub = _model_schema(registration.params)
            definitions.update(sub.pop("definitions", {}))
            def_name = f"{kind}.{name}.params"
            sub.setdefault("description", registration.description or f"Params of {kind} '{registration.name}'.")
            definitions[def_name] = sub
            params_schema = {"$ref": f"#/definitions/{def_name}"}
        then: dict[str, Any] = {"properties": {"params": params_schema}}
        if registration.params is not None and any(f.is_required() for f in registration.params.model_fields.values()):
            then["required"] = ["params"]  # a missing 'params' is validated as {}, which lacks required keys
        branches.append(
            {
                "if": {"properties": {"kind": {"const": name}}, "required": ["kind"]},
                "then": then,
            }
        )
    if branches:
        spec["allOf"] = branches


def _compose_names(schema: dict[str, Any], registry: PluginRegistry) -> None:
    """Constrain the names validation checks against the registry: data sources and benchmark metrics.

    ``data.transform`` stays a free string: ``@register_transform`` adds transforms at run time.
    """
    definitions = schema.setdefault("definitions", {})
    sources = registry.names("source")
    if sources:
        definitions["DataSpec"]["properties"]["source_kind"]["enum"] = sources
    metrics = registry.names("metric")
    if metrics:
        choices: list[dict[str, Any]] = []
        plain = [name for name in metrics if not name.endswith(("@k", "^k"))]
        if plain:
            choices.append({"enum": plain})
        for name in metrics:
            if name.endswith(("@k", "^k")):
                choices.append({"pattern": "^" + re.escape(name[:-1]) + "[1-9][0-9]*$"})
        items = {"type": "string", "anyOf": choices} if len(choices) > 1 else {"type": "string", **choices[0]}
        definitions["BenchmarkSpec"]["properties"]["metrics"]["items"] = items


def config_schema(registry: PluginRegistry) -> dict[str, Any]:
    """The run config schema with each kind's params composed in (``if kind == X then params: X's model``)."""
    schema = _model_schema(RunConfig)
    _compose_kind(schema, registry, "algorithm", "AlgorithmSpec")
    _compose_kind(schema, registry, "backend", "BackendSpec")
    _compose_kind(schema, registry, "callback", "CallbackSpec")
    _compose_names(schema, registry)
    return _finish(schema, "run_config.schema.json")


def all_schemas(registry: PluginRegistry) -> dict[str, dict[str, Any]]:
    """Every published schema by file name."""
    return {
        "run_config.schema.json": config_schema(registry),
        "prompt_example.schema.json": _finish(_model_schema(PromptExample | ChatPromptExample), "prompt_example.schema.json"),
        "sft_example.schema.json": _finish(_model_schema(PromptExample | ChatPromptExample | ChatExample), "sft_example.schema.json"),
        "task.schema.json": _finish(_model_schema(TaskRow), "task.schema.json"),
        "metrics_row.schema.json": _finish(_model_schema(MetricsRow), "metrics_row.schema.json"),
        "prediction_row.schema.json": _finish(_model_schema(PredictionRow), "prediction_row.schema.json"),
    }


def dump_schema(schema: dict[str, Any]) -> str:
    """Serialize a schema the way ``schemas/`` stores it (stable, indented, trailing newline)."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write_schemas(registry: PluginRegistry, directory: Path) -> list[Path]:
    """Write every schema into ``directory``; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in all_schemas(registry).items():
        target = directory / name
        target.write_text(dump_schema(schema), encoding="utf-8")
        written.append(target)
    return written
