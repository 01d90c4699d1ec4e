"""JSON Schema (draft-07) export of the config and row models, composed with the installed plugins.

The files in ``schemas/`` are :func:`write_schemas` of the built-in plugins; a test regenerates
them and fails when they differ. Draft-07 keeps editors' YAML language servers happy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter

from evsys.schema.config import RunConfig
from evsys.schema.registry import PluginRegistry
from evsys.schema.rows import ChatExample, MetricsRow, PredictionRow, PromptExample, TaskRow

DRAFT_07 = "http://json-schema.org/draft-07/schema#"
REF_TEMPLATE = "#/definitions/{model}"

#: file name -> title, for every schema EvSys publishes
SCHEMA_FILES: dict[str, str] = {
    "run_config.schema.json": "EvSys run config",
    "prompt_example.schema.json": "EvSys PromptExample row",
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


def _finish(schema: dict[str, Any], file_name: str) -> dict[str, Any]:
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
        if registration.params is None:
            params_schema: dict[str, Any] = {"type": "object", "maxProperties": 0, "description": f"'{registration.name}' takes no params."}
        else:
            sub = _model_schema(registration.params)
            definitions.update(sub.pop("definitions", {}))
            def_name = f"{kind}.{registration.name}.params"
            sub.setdefault("description", registration.description or f"Params of {kind} '{registration.name}'.")
            definitions[def_name] = sub
            params_schema = {"$ref": f"#/definitions/{def_name}"}
        branches.append(
            {
                "if": {"properties": {"kind": {"const": registration.name}}, "required": ["kind"]},
                "then": {"properties": {"params": params_schema}},
            }
        )
    if branches:
        spec["allOf"] = branches


def config_schema(registry: PluginRegistry) -> dict[str, Any]:
    """The run config schema with each kind's params composed in (``if kind == X then params: X's model``)."""
    schema = _model_schema(RunConfig)
    _compose_kind(schema, registry, "algorithm", "AlgorithmSpec")
    _compose_kind(schema, registry, "backend", "BackendSpec")
    _compose_kind(schema, registry, "callback", "CallbackSpec")
    return _finish(schema, "run_config.schema.json")


def all_schemas(registry: PluginRegistry) -> dict[str, dict[str, Any]]:
    """Every published schema by file name."""
    return {
        "run_config.schema.json": config_schema(registry),
        "prompt_example.schema.json": _finish(_model_schema(PromptExample), "prompt_example.schema.json"),
        "sft_example.schema.json": _finish(_model_schema(PromptExample | ChatExample), "sft_example.schema.json"),
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
