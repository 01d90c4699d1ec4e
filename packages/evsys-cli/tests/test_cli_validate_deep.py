"""``validate --deep`` against plugins built in the test: backend requirements, model checkers,
templates, row models, transforms, benchmarks and metrics, and the summary line."""

from __future__ import annotations

import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

import evsys.data.plugin
import evsys.verifiers.plugin
from evsys.cli.validate_cmd import validate_config
from evsys.schema.params import NoParams, TrainingParams
from evsys.schema.plugins import build_registry, hookimpl
from evsys.schema.registry import PluginRegistry
from evsys.schema.rows import PromptExample

TASK = '{"task_id": "t1", "instruction": "Capital of Germany?", "verifier": {"kind": "in_process", "fn_name": "contains", "expected": "Berlin"}}\n'
ROW = '{"inputs": {"question": "Capital of France?"}, "expected": "Paris"}\n'


class ToyParams(TrainingParams):
    """Params of ``toy``."""

    user_template: str = Field(default="{question}", description="Student prompt.")
    teacher_template: str = Field(default="{question} {expected}", description="Teacher prompt.")


def _toy_plugin(checker: str | None, requires: tuple[str, ...]) -> types.ModuleType:
    module = types.ModuleType("toy_deep_plugin")

    @hookimpl
    def evsys_register(register: Any) -> None:
        register.algorithm(
            "toy",
            "toy_impl:Toy",
            params=ToyParams,
            row_models=(PromptExample,),
            templates={"user_template": frozenset(), "teacher_template": frozenset({"expected"})},
        )
        register.backend(
            "back",
            "toy_impl:Back",
            params=NoParams,
            requires=requires,
            install_hint="pip install toy-extras",
            checker=checker,
        )
        register.transform("qa", "toy_transforms:qa")
        register.transform("gone", "toy_transforms_missing:qa")

    module.evsys_register = evsys_register  # type: ignore[attr-defined]
    return module


def make_registry(checker: str | None = "toy_checks:check", requires: tuple[str, ...] = ()) -> PluginRegistry:
    return build_registry(
        plugins=[
            ("evsys-data", evsys.data.plugin),
            ("evsys-verifiers", evsys.verifiers.plugin),
            ("toy-plugin", _toy_plugin(checker, requires)),
        ],
        autoload=False,
    )


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working directory with a data file, a benchmark, and the toy modules importable."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "toy_checks.py").write_text(
        textwrap.dedent(
            """\
            from evsys.schema.errors import Problem

            def check(model_name, params):
                if model_name == "warn-me":
                    return [Problem("not a model I know", field="model.name", severity="warning")]
                if model_name == "explode":
                    raise RuntimeError("boom")
                if model_name == "bad":
                    return [Problem("no such model")]
                return []
            """
        )
    )
    (tmp_path / "toy_transforms.py").write_text(
        "def qa(row):\n    return {'inputs': {'question': row['q']}, 'expected': row['a']}\n"
    )
    (tmp_path / "toy_impl.py").write_text("class Toy:\n    pass\n\n\nclass Back:\n    pass\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text(ROW * 3)
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "tasks.jsonl").write_text(TASK)
    yield tmp_path
    for name in ("toy_checks", "toy_transforms", "toy_impl"):
        sys.modules.pop(name, None)


def write(path: Path, *, model: str = "m", extra: str = "", params: str = "", data: str = "data/train.jsonl") -> str:
    path.write_text(
        textwrap.dedent(
            f"""\
            model: {{name: {model}}}
            backend: {{kind: back}}
            algorithm:
              kind: toy
              params: {{learning_rate: 0.1, max_steps: 1{params}}}
            data: {{path: {data}{extra}}}
            callbacks: []
            metadata:
              benchmark:
                - {{name: val, path: bench, metrics: [pass@1, pass^2, mean@3], num_samples: 2}}
            """
        )
    )
    return path.name


def lines(config: str, registry: PluginRegistry) -> tuple[list[str], str]:
    result = validate_config(config, deep=True, registry=registry)
    return [p.format() for p in result.problems], result.summary()


def test_deep_problems_in_config_order(workdir: Path) -> None:
    config = write(workdir / "c.yaml")
    problems, summary = lines(config, make_registry())
    assert problems == [
        "c.yaml:10:58: metadata.benchmark[0].metrics[2]: mean@3 needs 3 samples per task but num_samples is 2; set num_samples: 3 (or more)"
    ]
    assert summary == "FAILED: c.yaml (1 error)"


def test_summary_line_and_warnings_do_not_fail(workdir: Path) -> None:
    config = write(workdir / "c.yaml", model="warn-me")
    text = (workdir / config).read_text().replace(", mean@3", "")
    (workdir / config).write_text(text)
    result = validate_config(config, deep=True, registry=make_registry())
    assert [p.format() for p in result.problems] == ["c.yaml:1:9: model.name: warning: not a model I know"]
    assert result.ok
    assert (
        result.summary()
        == "OK: c.yaml (algorithm toy, backend back, 1 step; deep: 3 examples, 1 benchmark with 1 task; 1 warning)"
    )
    shallow = validate_config(config, registry=make_registry())
    assert shallow.summary() == "OK: c.yaml (algorithm toy, backend back, 1 step)"


def test_backend_requirements_and_checker_failures(workdir: Path) -> None:
    config = write(workdir / "c.yaml", model="explode")
    problems, _ = lines(config, make_registry(requires=("json", "a_module_nobody_has", "neither.this")))
    assert problems[:2] == [
        "c.yaml:2:11: backend.kind: backend 'back' needs a_module_nobody_has, neither.this, not installed: pip install toy-extras",
        "c.yaml:1:9: model.name: the model check of backend 'back' failed: RuntimeError: boom",
    ]
    problems, _ = lines(config, make_registry(checker="toy_missing_module:check"))
    assert problems[0] == (
        "c.yaml:2:11: backend.kind: cannot load the model check of backend 'back' (toy_missing_module:check): "
        "ModuleNotFoundError: No module named 'toy_missing_module'"
    )
    config = write(workdir / "d.yaml", model="bad")
    problems, _ = lines(config, make_registry())
    assert problems[0] == "d.yaml:1:9: model.name: no such model"


def test_templates_rows_and_transforms(workdir: Path) -> None:
    (workdir / "data" / "train.jsonl").write_text(
        ROW + '{"inputs": {"q": "x"}, "expected": "y"}\n' + '{"messages": [{"role": "assistant", "content": "x"}]}\n'
    )
    config = write(workdir / "c.yaml", params=", teacher_template: '{question} {expected} {hint}'")
    problems, _ = lines(config, make_registry())
    assert problems[:4] == [
        "data/train.jsonl:1: inputs: template placeholder {hint} is not a key of inputs (keys: question)",
        "data/train.jsonl:2: inputs: template placeholder {question} is not a key of inputs (keys: q)",
        "data/train.jsonl:2: inputs: template placeholder {hint}, {question} is not a key of inputs (keys: q)",
        "data/train.jsonl:3: inputs: required field is missing",
    ]
    (workdir / "raw.jsonl").write_text('{"q": "Capital of Peru?", "a": "Lima"}\n')
    config = write(workdir / "t.yaml", data="raw.jsonl", extra=", transform: qa")
    problems, summary = lines(config, make_registry())
    assert summary.startswith("FAILED") and not any("raw.jsonl" in p for p in problems)
    config = write(workdir / "g.yaml", data="raw.jsonl", extra=", transform: gone")
    problems, _ = lines(config, make_registry())
    assert problems[0] == (
        "g.yaml:6:25: data.transform: transform 'gone' of plugin toy-plugin has a broken target "
        "toy_transforms_missing:qa: module 'toy_transforms_missing' not found"
    )


def test_bad_template_text_is_located_in_the_config(workdir: Path) -> None:
    config = write(workdir / "c.yaml", params=", user_template: 'Q: {}'")
    problems, _ = lines(config, make_registry())
    assert problems[0] == (
        "c.yaml:5:46: algorithm.params.user_template: invalid template: positional placeholders ('{}' or '{0}') "
        "are not allowed; name them, e.g. '{question}'"
    )


def test_benchmark_path_must_be_a_directory(workdir: Path) -> None:
    config = write(workdir / "c.yaml")
    text = (workdir / config).read_text().replace("path: bench,", "path: bench/tasks.jsonl,").replace(", mean@3", "")
    (workdir / config).write_text(text)
    problems, _ = lines(config, make_registry())
    assert problems == [
        "c.yaml:10:19: metadata.benchmark[0].path: expected a directory holding tasks.jsonl, got a file: bench/tasks.jsonl"
    ]
