"""evsys-data: the ``hf`` source (data files, globs, save_to_disk, Hub ids), ``columns``, the Arrow
fast path of the deep check, and benchmark tasks from a dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

datasets = pytest.importorskip("datasets")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from evsys.data.benchmarks import load_dataset_tasks  # noqa: E402
from evsys.data.examples import SourceOptions, check_examples_file, iter_examples, load_examples  # noqa: E402
from evsys.schema.config import BenchmarkSpec  # noqa: E402
from evsys.schema.errors import DataError  # noqa: E402
from evsys.schema.rows import ChatPromptExample, PromptExample, TaskRow  # noqa: E402

ROWS = [{"q": "What is 1+1?", "a": "2", "n": 7}, {"q": "Capital of France?", "a": "Paris", "n": 8}, {"q": "Say 007", "a": "007", "n": 9}]
QA = {"question": "q", "expected": "a"}
MODELS = (PromptExample, ChatPromptExample)


@pytest.fixture(autouse=True)
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's datasets cache lives under its tmp_path, never in the user's home."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def hf(**kwargs: Any) -> SourceOptions:
    return SourceOptions(source_kind="hf", **kwargs)


def dumped(examples: list[Any]) -> list[dict[str, Any]]:
    return [e.model_dump() for e in examples]


def test_same_examples_from_parquet_csv_json_arrow_glob_and_save_to_disk(tmp_path: Path, registry) -> None:
    table = pa.Table.from_pylist(ROWS)
    pq.write_table(table, tmp_path / "train.parquet")
    (tmp_path / "train.csv").write_text("q,a,n\n" + "".join(f"\"{r['q']}\",{r['a']},{r['n']}\n" for r in ROWS), encoding="utf-8")
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS[:1])}).save_to_disk(str(tmp_path / "saved_dict"))
    shards = tmp_path / "shards"
    shards.mkdir()
    pq.write_table(table.slice(0, 2), shards / "part-0.parquet")
    pq.write_table(table.slice(2), shards / "part-1.parquet")
    with pa.OSFile(str(tmp_path / "train.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    expected = [
        {"inputs": {"question": r["q"]}, "expected": r["a"], "id": None, "metadata": {}} for r in ROWS
    ]
    for path in ["train.parquet", "train.csv", "train.jsonl", "train.arrow", "saved", "saved_dict", "shards/*.parquet"]:
        examples = load_examples(tmp_path / path if "*" not in path else f"{tmp_path}/{path}", MODELS, options=hf(columns=QA), registry=registry)
        assert dumped(examples) == expected, path
    test_split = load_examples(tmp_path / "saved_dict", MODELS, options=hf(columns=QA, split="test"), registry=registry)
    assert dumped(test_split) == expected[:1]


def test_split_and_column_mistakes_are_one_line_each(tmp_path: Path, registry) -> None:
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(DataError) as caught:
        load_examples(tmp_path / "d", MODELS, options=hf(columns=QA, split="validation"), registry=registry)
    assert str(caught.value) == f"{tmp_path / 'd'}: no split 'validation' (splits: train, test); set data.split"
    with pytest.raises(DataError) as caught:
        load_examples(tmp_path / "d", MODELS, options=hf(columns={"question": "question", "expected": "a"}), registry=registry)
    assert str(caught.value) == f"{tmp_path / 'd'}[train]: data.columns: no column 'question' (columns: q, a, n)"
    with pytest.raises(DataError, match="file not found"):
        load_examples(tmp_path / "nope.parquet", MODELS, options=hf(columns=QA), registry=registry)
    with pytest.raises(DataError, match="no files match this pattern"):
        load_examples(f"{tmp_path}/none/*.parquet", MODELS, options=hf(columns=QA), registry=registry)


def test_bad_rows_name_the_row_and_the_dataset_column(tmp_path: Path, registry) -> None:
    pq.write_table(pa.table({"q": ["ok?", None, "x?"], "a": ["yes", "no", "z"], "n": [1, 2, 3]}), tmp_path / "t.parquet")
    valid, problems = check_examples_file(tmp_path / "t.parquet", MODELS, options=hf(columns={"question": "q", "expected": "n"}), registry=registry)
    lines = [p.format() for p in problems]
    assert valid == 0
    assert lines[0] == f"{tmp_path / 't.parquet'}[train]:row 1: n: Input should be a valid string or array, got integer 1"
    assert lines[1] == f"{tmp_path / 't.parquet'}[train]:row 2: q: empty value (null)"
    assert len(lines) == 3


def _both_ways(path: Path, columns: dict[str, str], registry, templates=None) -> tuple[tuple[int, list[str]], tuple[int, list[str]]]:
    fast_valid, fast = check_examples_file(path, MODELS, options=hf(columns=columns), templates=templates, registry=registry)
    slow_valid, slow = 0, []
    for _, example, problems in iter_examples(path, MODELS, options=hf(columns=columns), templates=templates, registry=registry):
        slow_valid += example is not None
        slow += [p.format() for p in problems]
    return (fast_valid, [p.format() for p in fast]), (slow_valid, slow)


@pytest.mark.parametrize(
    "columns_data",
    [
        {"q": pa.array(["a", "b"]), "a": pa.array(["x", "y"])},
        {"q": pa.array([1, 2]), "a": pa.array(["x", "y"])},
        {"q": pa.array(["a", "b"]), "a": pa.array([1, 2])},
        {"q": pa.array(["a", "b"]), "a": pa.array([["x", "X"], ["y"]])},
        {"q": pa.array(["a", "b"]), "a": pa.array([["x", None], ["y"]])},
        {"q": pa.array(["a", None]), "a": pa.array(["x", "y"])},
        {"q": pa.array(["a", "b"]), "a": pa.array(["x", None])},
        {"q": pa.array(["a", "b"]), "a": pa.array(["x", "y"]).cast(pa.large_string())},
    ],
)
def test_arrow_fast_path_agrees_with_row_by_row(tmp_path: Path, registry, columns_data: dict[str, Any]) -> None:
    pq.write_table(pa.table(columns_data), tmp_path / "t.parquet")
    fast, slow = _both_ways(tmp_path / "t.parquet", QA, registry, templates={"{question}": frozenset()})
    assert fast == slow


def test_arrow_fast_path_agrees_on_templates_and_ids(tmp_path: Path, registry) -> None:
    pq.write_table(pa.table({"q": ["a", "b"], "a": ["x", "y"], "i": [1, 2]}), tmp_path / "t.parquet")
    fast, slow = _both_ways(tmp_path / "t.parquet", {**QA, "id": "i"}, registry)
    assert fast == slow and fast[0] == 0
    fast, slow = _both_ways(tmp_path / "t.parquet", QA, registry, templates={"{question} {context}": frozenset()})
    assert fast == slow and fast[0] == 0 and "{context}" in fast[1][0]


def test_chat_rows_from_a_messages_column(tmp_path: Path, registry) -> None:
    rows = [{"conv": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}], "gold": "4"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "chat.parquet")
    (example,) = load_examples(tmp_path / "chat.parquet", MODELS, options=hf(columns={"messages": "conv", "expected": "gold"}), registry=registry)
    assert isinstance(example, ChatPromptExample)
    assert [m.role for m in example.messages] == ["system", "user"] and example.expected == "4"


def test_hub_id_goes_to_load_dataset_with_subset_and_split(registry, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []

    splits = {"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS[:2])}

    def fake_load_dataset(path: str, name: str | None = None, *, split: str) -> Any:
        calls.append((path, name, split))
        return splits[split]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    examples = load_examples("openai/gsm8k", MODELS, options=hf(columns=QA, subset="main", split="test"), registry=registry)
    assert calls == [("openai/gsm8k", "main", "test")] and len(examples) == 2
    assert len(load_examples("openai/gsm8k", MODELS, options=hf(columns=QA), registry=registry)) == 3
    assert calls[-1] == ("openai/gsm8k", None, "train")


def test_hub_id_offline_and_not_cached_is_one_line(registry, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(path: str, name: str | None = None, **kwargs: Any) -> Any:
        raise ConnectionError(f"Couldn't reach '{path}' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError) as caught:
        load_examples("someone/private-set", MODELS, options=hf(columns=QA), registry=registry)
    assert len(caught.value.problems) == 1
    assert str(caught.value).startswith("someone/private-set: Hub dataset 'someone/private-set' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set")


def test_benchmark_tasks_from_a_dataset_with_one_verifier(tmp_path: Path, registry) -> None:
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "test.parquet")
    spec = BenchmarkSpec.model_validate(
        {
            "name": "arith",
            "data": {"source_kind": "hf", "path": str(tmp_path / "test.parquet"), "columns": {"question": "q", "expected": "a"}},
            "verifier": {"fn_name": "numeric_match", "options": {"extract": "last_number"}},
        }
    )
    tasks = load_dataset_tasks(spec, registry)
    assert [t.resolved_id for t in tasks] == ["row_1", "row_2", "row_3"]
    assert tasks[1] == TaskRow(task_id="row_2", question="Capital of France?", verifier={"fn_name": "numeric_match", "expected": "Paris", "options": {"extract": "last_number"}})
    with_ids = BenchmarkSpec.model_validate({**spec.model_dump(exclude_none=True), "data": {**spec.data.model_dump(exclude_none=True), "columns": {"question": "q", "expected": "a", "id": "q"}}})
    assert [t.resolved_id for t in load_dataset_tasks(with_ids, registry)] == [r["q"] for r in ROWS]


def test_benchmark_needs_path_or_data() -> None:
    with pytest.raises(ValueError, match="exactly one of 'path'"):
        BenchmarkSpec.model_validate({"name": "x"})
    with pytest.raises(ValueError, match="unknown task field 'inputs'"):
        BenchmarkSpec.model_validate({"name": "x", "data": {"source_kind": "hf", "path": "p.parquet", "columns": {"inputs": "q"}}})


def test_a_csv_given_to_the_jsonl_source_is_one_line(tmp_path: Path, registry) -> None:
    (tmp_path / "train.csv").write_text("q,a\n" + "x,y\n" * 11, encoding="utf-8")
    with pytest.raises(DataError) as caught:
        load_examples(tmp_path / "train.csv", MODELS, registry=registry)
    assert str(caught.value) == f"{tmp_path / 'train.csv'}: a .csv file is not JSON lines; read it with data.source_kind: hf"


def test_a_transform_sees_the_raw_row_and_columns_map_its_result(tmp_path: Path, registry) -> None:
    from evsys.data import register_transform

    @register_transform("final_answer_test")
    def final_answer(row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "final": row["answer"].split("####")[-1].strip()}

    pq.write_table(pa.Table.from_pylist([{"question": "2+2?", "answer": "2 and 2 make 4\n#### 4"}]), tmp_path / "g.parquet")
    (example,) = load_examples(
        tmp_path / "g.parquet", MODELS, options=hf(columns={"question": "question", "expected": "final"}, transform="final_answer_test"), registry=registry
    )
    assert example.model_dump()["expected"] == "4"


def test_chat_rows_meet_only_the_templates_that_rewrite_the_last_user_turn(tmp_path: Path, registry) -> None:
    row = {"messages": [{"role": "user", "content": "2+2?"}], "expected": "4"}
    (tmp_path / "chat.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    teacher_extra = frozenset({"prompt", "expected", "demo"})
    ok = {"{question}": frozenset(), "{prompt}\n\nThe answer is {expected}.": teacher_extra}
    assert check_examples_file(tmp_path / "chat.jsonl", MODELS, templates=ok, registry=registry) == (1, [])
    bad = {"{question}": frozenset(), "{question}\n\nThe answer is {expected}.": teacher_extra}
    valid, problems = check_examples_file(tmp_path / "chat.jsonl", MODELS, templates=bad, registry=registry)
    assert valid == 0
    assert [p.format() for p in problems] == [
        f"{tmp_path / 'chat.jsonl'}:1: messages: template placeholder {{question}} needs inputs, which a chat row has none of (it may use {{demo}}, {{expected}}, {{prompt}})"
    ]


def test_an_empty_id_is_no_id_but_an_empty_answer_is_an_error(tmp_path: Path, registry) -> None:
    pq.write_table(pa.table({"q": ["a?", "b?"], "a": ["x", "y"], "i": ["first", None]}), tmp_path / "t.parquet")
    examples = load_examples(tmp_path / "t.parquet", MODELS, options=hf(columns={**QA, "id": "i"}), registry=registry)
    assert [e.id for e in examples] == ["first", None]
    spec = BenchmarkSpec.model_validate({"name": "b", "data": {"source_kind": "hf", "path": str(tmp_path / "t.parquet"), "columns": {**QA, "id": "i"}}})
    assert [t.resolved_id for t in load_dataset_tasks(spec, registry)] == ["first", "row_2"]


def test_columns_map_jsonl_rows_too(tmp_path: Path, registry) -> None:
    (tmp_path / "t.jsonl").write_text('{"q": "a?", "a": "x"}\n{"q": "b?"}\n', encoding="utf-8")
    valid, problems = check_examples_file(tmp_path / "t.jsonl", MODELS, options=SourceOptions(columns=QA), registry=registry)
    assert valid == 1
    assert [p.format() for p in problems] == [f"{tmp_path / 't.jsonl'}:2: a: no such column in this row"]
