"""Hostile input: random configs, JSONL rows, task rows and verifier inputs never raise anything but a located error.

Property-based (hypothesis) where the input space is open, plus the classic cases by hand: huge
lines, wrong encodings, NaN, empty files, and a very long tasks.jsonl.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evsys.cli.main import main
from evsys.data.examples import load_examples
from evsys.schema.errors import ConfigError, DataError, EvsysError, Problem
from evsys.schema.plugins import DISABLE_AUTOLOAD_ENV, build_registry
from evsys.schema.rows import PromptExample, TaskRow
from evsys.schema.validation import load_config
from evsys.verifiers.scoring import verify
from evsys.verifiers.tasks import check_tasks_file, load_tasks

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
GOOD_CONFIG: dict[str, Any] = {
    "name": "demo",
    "output_dir": "outputs",
    "model": {"name": "Qwen/Qwen3.5-4B"},
    "backend": {"kind": "tinker"},
    "algorithm": {"kind": "sdft", "params": {"learning_rate": 1e-4, "max_steps": 2, "batch_size": 1, "lora_rank": 1, "topk": 20, "user_template": "{question}"}},
    "data": {"source_kind": "jsonl", "path": "train.jsonl"},
    "metadata": {"benchmark": [{"name": "val", "path": "val", "run_every": 1, "metrics": ["pass@1"], "split": "val"}]},
    "callbacks": [{"kind": "local_logger"}],
}

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30)
)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)


@pytest.fixture(scope="module")
def registry(monkeypatch_module: pytest.MonkeyPatch) -> Any:
    """The installed plugins (entry points), as a user's `evsys` sees them."""
    monkeypatch_module.delenv(DISABLE_AUTOLOAD_ENV, raising=False)
    return build_registry()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Any:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def assert_located(problems: list[Problem], path: Path, *, line: bool = True) -> None:
    """Every problem names the file (and, for a problem of one line or field, that line)."""
    assert problems
    for problem in problems:
        assert problem.location is not None and problem.location.path == str(path), problem.format()
        if line and not problem.message.startswith("... and "):
            assert problem.location.line is not None, problem.format()


def _mutate(config: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(config))
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


LEAVES = [
    ["name"], ["model", "name"], ["backend", "kind"], ["algorithm", "kind"], ["algorithm", "params", "learning_rate"],
    ["algorithm", "params", "max_steps"], ["algorithm", "params", "topk"], ["algorithm", "params", "user_template"],
    ["algorithm", "params", "typo_key"], ["data", "path"], ["data", "source_kind"], ["metadata", "benchmark", 0, "metrics"],
    ["metadata", "benchmark", 0, "run_every"], ["callbacks", 0, "kind"], ["callbacks"], ["unknown_top"], ["metadata"],
]


@SETTINGS
@given(leaf=st.sampled_from(LEAVES), value=json_values)
def test_a_config_with_any_value_anywhere_gives_located_field_errors(tmp_path: Path, registry: Any, leaf: list[Any], value: Any) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(_mutate(GOOD_CONFIG, leaf, value), allow_unicode=True), encoding="utf-8")
    try:
        load_config(path, registry)
    except ConfigError as exc:
        assert_located(exc.problems, path)
        assert all(p.field for p in exc.problems), [p.format() for p in exc.problems]


@SETTINGS
@given(text=st.text(max_size=400))
def test_any_text_as_a_config_is_a_located_error_not_a_traceback(tmp_path: Path, registry: Any, text: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path, registry)
    except ConfigError as exc:
        assert_located(exc.problems, path)


@SETTINGS
@given(lines=st.lists(st.one_of(json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=60)), max_size=8))
def test_any_jsonl_rows_load_or_report_file_and_line(tmp_path: Path, registry: Any, lines: list[bytes]) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(b"\n".join(line.replace(b"\n", b" ") for line in lines))
    try:
        examples = load_examples(path, (PromptExample,), registry=registry)
    except DataError as exc:
        empty = len(exc.problems) == 1 and exc.problems[0].message.startswith("no examples")
        assert_located(exc.problems, path, line=not empty)
    else:
        assert all(isinstance(e, PromptExample) for e in examples)


task_like = st.fixed_dictionaries(
    {},
    optional={
        "task_id": json_scalars,
        "instruction": json_values,
        "messages": json_values,
        "verifier": st.fixed_dictionaries({}, optional={"kind": json_scalars, "fn_name": json_scalars, "expected": json_values, "options": json_values, "timeout": json_scalars}),
        "target": json_values,
        "extra": json_values,
    },
)


@SETTINGS
@given(rows=st.lists(st.one_of(task_like.map(json.dumps), json_values.map(json.dumps), st.text(max_size=40)), max_size=6))
def test_any_task_rows_load_or_report_file_line_and_field(tmp_path: Path, registry: Any, rows: list[str]) -> None:
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(r.replace("\n", " ") for r in rows), encoding="utf-8", errors="surrogatepass")
    try:
        tasks = load_tasks(path)
    except DataError as exc:
        no_tasks = len(exc.problems) == 1 and exc.problems[0].message == "has no tasks"
        assert_located(exc.problems, path, line=not no_tasks)
    else:
        assert all(isinstance(t, TaskRow) for t in tasks)
    for problem in check_tasks_file(path, registry):  # `validate --deep` never raises either
        assert problem.location is not None and problem.location.path == str(path)


@SETTINGS
@given(output=st.text(max_size=200), expected=json_values, fn_index=st.integers(min_value=0, max_value=50), options=st.sampled_from([{}, {"extract": "last_number"}, {"threshold": 0.5}, {"case_sensitive": True}]))
def test_any_verifier_input_scores_in_range_and_never_raises(registry: Any, output: str, expected: Any, fn_index: int, options: dict[str, Any]) -> None:
    names = [n for n in registry.names("verifier_function") if n not in ("python_tests", "math_equiv")]
    fn_name = names[fn_index % len(names)]
    task = TaskRow.model_validate({"task_id": "t", "instruction": "q", "verifier": {"kind": "in_process", "fn_name": fn_name, "expected": expected, "options": options}})
    verdict = verify(output, task, registry)
    assert 0.0 <= verdict.score <= 1.0 and not math.isnan(verdict.score)


# ------------------------------------------------------------------ by hand


def test_huge_lines_wrong_encodings_nan_and_empty_files(tmp_path: Path, registry: Any) -> None:
    train = tmp_path / "train.jsonl"
    huge = json.dumps({"inputs": {"question": "x" * 20_000_000}, "expected": "y"})
    train.write_text(json.dumps({"inputs": {"question": "ok"}, "expected": "a"}) + "\n" + huge + "\n", encoding="utf-8")
    started = time.monotonic()
    assert len(load_examples(train, (PromptExample,), registry=registry)) == 2
    assert time.monotonic() - started < 30

    train.write_bytes(b'{"inputs": {"question": "ok"}, "expected": "a"}\n{"inputs": {"question": "caf\xe9"}, "expected": "b"}\n')
    with pytest.raises(DataError) as latin1:
        load_examples(train, (PromptExample,), registry=registry)
    assert [p.format() for p in latin1.value.problems] == [f"{train}:2: not valid UTF-8 (byte 28)"]

    train.write_text('{"inputs": {"question": NaN}, "expected": "a"}\n', encoding="utf-8")
    with pytest.raises(DataError) as nan:
        load_examples(train, (PromptExample,), registry=registry)
    assert nan.value.problems[0].location.line == 1 and "NaN" in nan.value.problems[0].message

    train.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="no examples"):
        load_examples(train, (PromptExample,), registry=registry)

    tasks = tmp_path / "tasks.jsonl"
    tasks.write_bytes(b'{"task_id": "a", "instruction": "q", "answer": "x"}\n' + '{"task_id": "b", "instruction": "é", "answer": "x"}\n'.encode("utf-16"))
    with pytest.raises(DataError) as utf16:
        load_tasks(tasks)
    assert utf16.value.problems[0].format().startswith(f"{tasks}:2: not valid UTF-8")
    tasks.write_text('{"task_id": "a", "instruction": "q", "answer": NaN}\n', encoding="utf-8")
    with pytest.raises(DataError) as nan_task:
        load_tasks(tasks)
    assert nan_task.value.problems[0].location.line == 1

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(GOOD_CONFIG), encoding="utf-16")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_config(config, registry)
    config.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="an empty file"):
        load_config(config, registry)
    config.write_text(yaml.safe_dump(_mutate(GOOD_CONFIG, ["algorithm", "params", "learning_rate"], float("nan"))), encoding="utf-8")
    with pytest.raises(ConfigError) as nan_config:
        load_config(config, registry)
    assert nan_config.value.problems[0].field == "algorithm.params.learning_rate"


def _write_tasks(path: Path, count: int, bad_line: int) -> None:
    verifier = '"verifier": {"kind": "in_process", "fn_name": "contains", "expected": "A"}'
    with path.open("w", encoding="utf-8") as handle:
        handle.writelines(
            f'{{"task_id": "t{i}", "instruction": "Question {i}?", {verifier}}}\n' if i != bad_line else f'{{"task_id": "t{i}", "instructoin": "typo"}}\n'
            for i in range(1, count + 1)
        )


@pytest.mark.parametrize("count", [pytest.param(100_000, id="100k"), pytest.param(1_000_000, id="1M", marks=pytest.mark.slow)])
def test_a_long_tasks_file_is_checked_quickly_and_its_bad_row_located(tmp_path: Path, count: int) -> None:
    tasks = tmp_path / "tasks.jsonl"
    _write_tasks(tasks, count, bad_line=count)
    started = time.monotonic()
    with pytest.raises(DataError) as bad:
        load_tasks(tasks)
    elapsed = time.monotonic() - started
    assert bad.value.problems[0].format() == f"{tasks}:{count}: instructoin: unknown key 'instructoin' (did you mean 'instruction'?)"
    assert elapsed < count / 10_000, f"{count} rows took {elapsed:.1f}s"


def test_hostile_config_through_the_cli_prints_one_located_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_bytes(b"name: demo\nmodel: {name: \xff\xfe}\n")
    assert main(["validate", str(config)]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and err.startswith(str(config))
    with pytest.raises(EvsysError):
        load_config(tmp_path / "missing.yaml", build_registry())
