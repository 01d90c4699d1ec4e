"""Shallow validation: YAML reading, JSON types, every problem at once in file order, metric names, schema export."""

from __future__ import annotations

import types
from typing import Any, Literal

import jsonschema
import pytest
from pydantic import Field, ValidationError

from evsys.schema.config import StrictModel
from evsys.schema.errors import ConfigError
from evsys.schema.params import TrainingParams
from evsys.schema.plugins import build_registry, hookimpl
from evsys.schema.registry import PluginRegistry, metric_family
from evsys.schema.rows import MetricsRow, PromptExample, TaskRow
from evsys.schema.schema_export import config_schema
from evsys.schema.validation import validate_document
from evsys.schema.yaml_source import parse_yaml


class ToyParams(TrainingParams):
    """Params of the toy algorithm."""

    topk: int = Field(default=5, ge=1, description="Top-k.")
    mode: Literal["fast", "slow"] = Field(default="fast", description="Mode.")
    betas: tuple[float, float] = Field(default=(0.9, 0.999), description="AdamW betas.")


class BackParams(StrictModel):
    """Params of the toy backend."""

    retries: int = Field(default=1, ge=0, description="Retries.")


def _plugin() -> types.ModuleType:
    module = types.ModuleType("toy_plugin")

    @hookimpl
    def evsys_register(register: Any) -> None:
        register.algorithm("toy", "toy:Toy", params=ToyParams, row_models=(PromptExample,), templates={})
        register.backend("back", "toy:Back", params=BackParams)
        register.callback("local_logger", "toy:Logger", params=BackParams)
        register.source("jsonl", "toy:read")
        for name in ("pass@k", "pass^k", "accuracy"):
            register.metric(name, f"toy:{name}")

    module.evsys_register = evsys_register  # type: ignore[attr-defined]
    return module


@pytest.fixture(scope="module")
def registry() -> PluginRegistry:
    return build_registry(plugins=[("toy-dist", _plugin())], autoload=False)


BASE = """\
model: {name: m}
backend: {kind: back}
algorithm:
  kind: toy
  params: {learning_rate: 1e-4, max_steps: 2}
data: {path: train.jsonl}
"""


def problems_of(text: str, registry: PluginRegistry) -> list[str]:
    try:
        validate_document(parse_yaml(text, "c.yaml"), registry)
    except ConfigError as exc:
        return [p.format() for p in exc.problems]
    return []


def test_valid_config_and_yaml_12_floats(registry: PluginRegistry) -> None:
    validated = validate_document(parse_yaml(BASE, "c.yaml"), registry)
    assert validated.algorithm_params.learning_rate == 1e-4  # type: ignore[attr-defined]
    assert validated.config.callbacks[0].kind == "local_logger"
    assert parse_yaml("a: 1e-4\nb: 5\nc: '1e-4'\nd: 1.5E+3\n", "x").data == {
        "a": 1e-4,
        "b": 5,
        "c": "1e-4",
        "d": 1500.0,
    }


def test_every_problem_at_once_in_file_order(registry: PluginRegistry) -> None:
    text = BASE.replace("model: {name: m}", "modle: {name: m}").replace(
        "max_steps: 2}", "max_steps: '2', topk: 0, mdoe: slow}"
    )
    text += "metadata: {benchmark: [{name: v, path: p, metrics: [pas@1, pass^2, pass@k, pass@0]}]}\ncallbacks: [{kind: nope}]\n"
    assert problems_of(text, registry) == [
        "c.yaml:1:1: model: required field is missing",
        "c.yaml:1:1: modle: unknown key 'modle' (did you mean 'model'?)",
        'c.yaml:5:33: algorithm.params.max_steps: Input should be a valid integer, got string "2"',
        "c.yaml:5:49: algorithm.params.topk: Input should be greater than or equal to 1",
        "c.yaml:5:58: algorithm.params.mdoe: unknown key 'mdoe' (did you mean 'mode'?)",
        "c.yaml:7:53: metadata.benchmark[0].metrics[0]: unknown metric 'pas@1' (did you mean 'pass@k'?); registered: accuracy, pass@k, pass^k",
        "c.yaml:7:68: metadata.benchmark[0].metrics[2]: 'pass@k' names a family of metrics; write k as a number, e.g. 'pass@1' or 'pass@4'",
        "c.yaml:7:76: metadata.benchmark[0].metrics[3]: unknown metric 'pass@0' (did you mean 'pass@k'?); registered: accuracy, pass@k, pass^k",
        "c.yaml:8:14: callbacks[0].kind: unknown callback 'nope'; registered: local_logger",
    ]


def test_default_callback_must_be_registered() -> None:
    bare = build_registry(autoload=False)
    assert "c.yaml:1:1: callbacks[0].kind: unknown callback 'local_logger'; registered: none" in problems_of(BASE, bare)


def test_lax_coercions_are_errors_but_json_integers_are_fine() -> None:
    params = {"learning_rate": 1, "max_steps": 3.0, "betas": [0.8, 0.9]}
    validated = ToyParams.model_validate(params)
    assert (validated.max_steps, validated.betas, validated.learning_rate) == (3, (0.8, 0.9), 1.0)
    for bad, message in [
        ({"max_steps": True}, "Input should be a valid integer, got boolean true"),
        ({"max_steps": "3"}, 'Input should be a valid integer, got string "3"'),
        ({"learning_rate": "0.1"}, 'Input should be a valid number, got string "0.1"'),
        ({"grad_clip": "1"}, 'Input should be a valid number, got string "1"'),
        ({"betas": ["0.9", 0.9]}, 'Input should be a valid number (item 0), got string "0.9"'),
        ({"max_steps": 2.5}, "Input should be a valid integer, got number 2.5"),
    ]:
        with pytest.raises(ValidationError) as caught:
            ToyParams.model_validate({**params, **bad})
        assert caught.value.errors()[0]["msg"] == message
    with pytest.raises(ValidationError, match=r"valid number \(key 'loss'\)"):
        MetricsRow.model_validate({"step": 1, "split": "train", "metrics": {"loss": "1"}})
    with pytest.raises(ValidationError, match="valid string or integer, got boolean"):
        TaskRow.model_validate({"task_id": True, "instruction": "x", "target": "y"})


def test_metric_families() -> None:
    assert metric_family("pass@4") == ("pass@k", 4)
    assert metric_family("pass^2") == ("pass^k", 2)
    assert metric_family("pass@0") is None
    assert metric_family("accuracy") is None


def test_yaml_problems_are_located() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_yaml("a: 1\nb:\n  c: 1\n  c: 2\n", "d.yaml")
    assert [p.format() for p in caught.value.problems] == [
        "d.yaml:4:3: b.c: duplicate key 'c' (first defined on line 3)"
    ]
    with pytest.raises(ConfigError) as caught:
        parse_yaml("a:\n\tb: 1\n", "t.yaml")
    assert caught.value.problems[0].format().endswith("(YAML indents with spaces, not tabs)")


def test_schema_composition_agrees_with_validation(registry: PluginRegistry) -> None:
    schema = config_schema(registry)
    validator = jsonschema.Draft7Validator(schema)
    base = parse_yaml(BASE, "c.yaml").data
    assert not list(validator.iter_errors(base))
    definitions = schema["definitions"]
    assert definitions["DataSpec"]["properties"]["source_kind"]["enum"] == ["jsonl"]
    for metrics, ok in [
        (["pass@3", "pass^2", "accuracy"], True),
        (["pass@k"], False),
        (["pass@0"], False),
        (["nope"], False),
    ]:
        document = {**base, "metadata": {"benchmark": [{"name": "v", "path": "p", "metrics": metrics}]}}
        assert (not list(validator.iter_errors(document))) is ok, metrics
        assert (not problems_of_data(document, registry)) is ok, metrics
    without_params = {**base, "algorithm": {"kind": "toy"}}
    assert list(validator.iter_errors(without_params)), "toy has required params: 'params' must be required"
    assert problems_of_data(without_params, registry)


def problems_of_data(data: dict[str, Any], registry: PluginRegistry) -> list[str]:
    import yaml

    return problems_of(yaml.safe_dump(data), registry)
