"""evsys-data: the jsonl source, example validation with file:line errors, templates and transforms."""

from __future__ import annotations

from pathlib import Path

import pytest

from evsys.data import (
    check_examples_file,
    load_examples,
    read_jsonl,
    register_transform,
    render_template,
    template_fields,
)
from evsys.data import plugin as data_plugin
from evsys.data.transforms import load_transform
from evsys.schema.errors import DataError, PluginError
from evsys.schema.plugins import build_registry, reset_default_registry
from evsys.schema.rows import ChatExample, PromptExample


def write(tmp_path: Path, text: str | bytes, name: str = "rows.jsonl") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_read_jsonl_reports_each_bad_line_with_its_number(tmp_path: Path) -> None:
    path = write(tmp_path, b'{"a": 1}\n\n{bad\n\xff\xfe\n{"x": NaN}\n[1, 2]\n')
    lines = list(read_jsonl(path))
    assert [(item.line, item.error is None) for item in lines] == [(1, True), (3, False), (4, False), (5, False), (6, True)]
    assert lines[1].error.startswith("invalid JSON")
    assert "UTF-8" in lines[2].error
    assert "NaN" in lines[3].error


def test_read_jsonl_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        list(read_jsonl(tmp_path / "nope.jsonl"))
    assert str(caught.value) == f"{tmp_path / 'nope.jsonl'}: file not found"


def test_check_examples_reports_rows_and_templates(tmp_path: Path, registry) -> None:
    path = write(
        tmp_path,
        '{"inputs": {"question": "q1"}, "expected": "a"}\n'
        '{"inputs": {"question": "q2"}}\n'
        '{"inputs": {"topic": "x"}, "expected": "b"}\n'
        '"just a string"\n',
    )
    valid, problems = check_examples_file(path, (PromptExample,), templates={"{question}": frozenset()}, registry=registry)
    assert valid == 1
    assert [p.format() for p in problems] == [
        f"{path}:2: expected: required field is missing",
        f"{path}:3: inputs: template placeholder {{question}} is not a key of inputs (keys: topic)",
        f"{path}:4: a row must be a JSON object, got str",
    ]


def test_load_examples_picks_the_row_model_that_fits(tmp_path: Path, registry) -> None:
    path = write(
        tmp_path,
        '{"inputs": {"question": "q"}, "expected": "a"}\n'
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n',
    )
    examples = load_examples(path, (PromptExample, ChatExample), registry=registry)
    assert [type(e) for e in examples] == [PromptExample, ChatExample]


def test_register_transform_reaches_every_registry_built_afterwards(tmp_path: Path) -> None:
    """The decorator records the function in the process, not in one registry: an explicit registry
    (``run(registry=...)``'s) built after it has the transform too."""
    reset_default_registry(None)

    @register_transform("qa_pairs_explicit")
    def qa_pairs(row):
        return {"inputs": {"question": row["q"]}, "expected": row["a"]}

    explicit = build_registry(plugins=[("evsys-data", data_plugin)], autoload=False)
    registration = explicit.get("transform", "qa_pairs_explicit")
    assert (registration.load(), registration.target_problem()) == (qa_pairs, None)
    path = write(tmp_path, '{"q": "Capital of Peru?", "a": "Lima"}\n')
    (example,) = load_examples(path, (PromptExample,), transform="qa_pairs_explicit", registry=explicit)
    assert example.model_dump()["expected"] == "Lima"
    assert register_transform("qa_pairs_explicit")(qa_pairs) is qa_pairs  # the same function again is no clash
    with pytest.raises(PluginError, match="transform 'qa_pairs_explicit' is registered twice in this process"):
        register_transform("qa_pairs_explicit")(lambda row: row)


def test_load_examples_empty_file_is_an_error(tmp_path: Path, registry) -> None:
    path = write(tmp_path, "\n\n")
    with pytest.raises(DataError, match="no examples: the file is empty"):
        load_examples(path, (PromptExample,), registry=registry)


def test_register_transform_is_used_by_name(tmp_path: Path, registry) -> None:
    @register_transform("qa_pairs_test")
    def qa_pairs(row):
        if row.get("skip"):
            return None
        return {"inputs": {"question": row["q"]}, "expected": row["a"]}

    path = write(tmp_path, '{"q": "Capital of Peru?", "a": "Lima"}\n{"skip": true}\n{"q": "x"}\n')
    assert load_transform(registry.get("transform", "qa_pairs_test")) is qa_pairs
    valid, problems = check_examples_file(path, (PromptExample,), transform="qa_pairs_test", registry=registry)
    assert valid == 1
    assert [p.format() for p in problems] == [f"{path}:3: transform 'qa_pairs_test' failed: KeyError: 'a'"]


def test_templates() -> None:
    assert template_fields("{question} and {ctx.name} {items[0]}") == frozenset({"question", "ctx", "items"})
    assert render_template("Q: {question}", {"question": "why?"}) == "Q: why?"
    with pytest.raises(KeyError, match=r"\{missing\}"):
        render_template("{missing}", {"question": "x"})
    with pytest.raises(ValueError, match="positional"):
        template_fields("{} and {0}")
