"""Reading and checking tasks.jsonl."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from evsys.schema.errors import DataError
from evsys.schema.plugins import build_registry
from evsys.schema.rows import TaskRow
from evsys.verifiers import plugin
from evsys.verifiers.tasks import check_tasks_file, load_benchmark_dir, load_tasks, task_messages, task_prompt

SEED_ROW = {
    "task_id": "val_0",
    "instruction": "What is the capital of Germany? Answer with just the city name.",
    "verifier": {"kind": "in_process", "fn_name": "contains", "expected": "Berlin"},
}


def _write(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def registry() -> Any:
    return build_registry([("evsys-verifiers", plugin)], autoload=False)


def test_load_the_seed_row_and_aliases(tmp_path: Path) -> None:
    rows = [
        SEED_ROW,
        {"id": 7, "question": "2+2?", "answer": "4"},
        {
            "task_id": "m",
            "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Hi?"}],
            "target": "hello",
        },
        {
            "task_id": "p",
            "prompt": "Say yes",
            "verifier": {"fn_name": "contains", "expected": "yes"},
            "metadata": {"src": "x"},
        },
    ]
    tasks = load_tasks(_write(tmp_path / "tasks.jsonl", ["", *rows, "   "]))
    assert [t.resolved_id for t in tasks] == ["val_0", "7", "m", "p"]
    assert tasks[1].resolved_expected == "4"
    assert tasks[2].resolved_expected == "hello"
    assert task_prompt(tasks[0]).startswith("What is the capital")
    assert task_prompt(tasks[2]) == "Hi?"
    assert task_messages(tasks[1]) == [{"role": "user", "content": "2+2?"}]
    assert task_messages(tasks[2])[0] == {"role": "system", "content": "be brief"}


def test_every_bad_line_is_reported_with_file_line_and_field(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "tasks.jsonl",
        [
            SEED_ROW,
            "{not json",
            {"instruction": "no id", "answer": "x"},
            {"task_id": "a", "instruction": "q", "verifier": {"kind": "in_process", "fn_nam": "contains"}},
            {"task_id": "b", "instruction": "q", "answr": "x"},
            {"task_id": "c", "instruction": "q", "prompt": "also", "answer": "x"},
            [1, 2],
            {"task_id": "val_0", "instruction": "dup", "answer": "x"},
            {"task_id": "d", "instruction": "q", "verifier": {"timeout": -1, "expected": "x"}},
        ],
    )
    with pytest.raises(DataError) as info:
        load_tasks(path)
    lines = [p.format() for p in info.value.problems]
    text = "\n".join(lines)
    assert f"{path}:2: invalid JSON" in text
    assert f"{path}:3: a task needs 'task_id' (or 'id')" in text
    assert f"{path}:4: verifier.fn_nam: unknown key 'fn_nam' (did you mean 'fn_name'?)" in text
    assert f"{path}:5: answr: unknown key 'answr' (did you mean 'answer'?)" in text
    assert f"{path}:6: a task needs exactly one of" in text
    assert f"{path}:7: a task must be a JSON object" in text
    assert f"{path}:8: task_id: duplicate task_id 'val_0' (first at line 1)" in text
    assert f"{path}:9: verifier.timeout:" in text
    assert [p.location.line for p in info.value.problems if p.location] == sorted(
        p.location.line for p in info.value.problems if p.location
    )


def test_problems_are_capped(tmp_path: Path) -> None:
    path = _write(tmp_path / "tasks.jsonl", ["{bad"] * 80)
    with pytest.raises(DataError) as info:
        load_tasks(path)
    assert len(info.value.problems) == 51
    assert info.value.problems[-1].message == "... and 30 more problems"


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="tasks file not found"):
        load_tasks(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="has no tasks"):
        load_tasks(_write(tmp_path / "empty.jsonl", [""]))


def test_load_benchmark_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"benchmark directory has no tasks\.jsonl"):
        load_benchmark_dir(tmp_path)
    with pytest.raises(DataError, match=r"benchmark directory has no tasks\.jsonl"):
        load_benchmark_dir(tmp_path / "missing")
    _write(tmp_path / "tasks.jsonl", [SEED_ROW])
    assert load_benchmark_dir(tmp_path)[0].resolved_id == "val_0"


def test_check_tasks_file(tmp_path: Path, registry: Any) -> None:
    path = _write(
        tmp_path / "tasks.jsonl",
        [
            SEED_ROW,
            {"task_id": 2, "instruction": "q", "verifier": {"fn_name": "contians", "expected": "x"}},
            {
                "task_id": 3,
                "instruction": "q",
                "verifier": {"kind": "in_proces", "fn_name": "contains", "expected": "x"},
            },
            {"task_id": 4, "instruction": "q", "verifier": {"kind": "python", "fn_name": "not a path"}},
            {"task_id": 5, "instruction": "q", "verifier": {"kind": "python", "fn_name": "pkg.mod:func"}},
            {"task_id": 6, "instruction": "q", "verifier": {"kind": "subprocess"}},
            {
                "task_id": 7,
                "instruction": "q",
                "verifier": {"fn_name": "contains", "expected": "x", "options": {"ignore_cas": True}},
            },
            {"task_id": 8, "instruction": "q", "verifier": {"fn_name": "contains"}},
            {"task_id": 9, "instruction": "q", "verifier": {"fn_name": "format_check", "options": {"preset": "json"}}},
            {"task_id": 10, "instruction": "q", "answer": "x", "verifier": {"options": {"extract": "boxd"}}},
            "{oops",
            {"task_id": 11, "instruction": "q", "answer": "x", "verifier": {"options": {"threshold": 0.5}}},
        ],
    )
    problems = [p.format() for p in check_tasks_file(path, registry)]
    assert problems == [
        f"{path}:2: verifier.fn_name: unknown verifier function 'contians' (did you mean 'contains'?)",
        f"{path}:3: verifier.kind: unknown verifier kind 'in_proces' (did you mean 'in_process'?)",
        f"{path}:4: verifier.fn_name: a python verifier needs fn_name 'module:function', got 'not a path'",
        f"{path}:5: verifier.fn_name: python verifier pkg.mod:func: module 'pkg.mod' not found",
        f"{path}:6: verifier.command: a subprocess verifier needs a command",
        f"{path}:7: verifier.options.ignore_cas: unknown option 'ignore_cas' for 'contains' (did you mean 'ignore_case'?)",
        f"{path}:8: verifier: 'contains' needs an expected answer (verifier.expected, target or answer)",
        f"{path}:10: verifier.options.extract: unknown extract 'boxd' (did you mean 'boxed'?)",
        f"{path}:11: invalid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
    ]
    assert check_tasks_file(tmp_path / "missing.jsonl", registry)[0].message == "tasks file not found"


def test_check_tasks_file_finds_python_targets_without_importing_them(
    tmp_path: Path, registry: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    (tmp_path / "evsys_never_imported_mod.py").write_text("import torch\n\n\ndef score(output, expected):\n    return 1.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rows = [
        {"task_id": 1, "instruction": "q", "verifier": {"kind": "python", "fn_name": "evsys_never_imported_mod:score"}},
        {"task_id": 2, "instruction": "q", "verifier": {"kind": "python", "fn_name": "evsys_never_imported_mod:scroe"}},
        {"task_id": 3, "instruction": "q", "verifier": {"kind": "python", "fn_name": "evsys_never_imported_mod:scroe"}},
    ]
    path = _write(tmp_path / "t.jsonl", rows)
    assert [p.format() for p in check_tasks_file(path, registry)] == [
        f"{path}:2: verifier.fn_name: python verifier evsys_never_imported_mod:scroe: "
        "module 'evsys_never_imported_mod' has no attribute 'scroe' (did you mean 'score'?)"
    ]
    assert "evsys_never_imported_mod" not in sys.modules


def test_check_tasks_file_is_fast(tmp_path: Path, registry: Any) -> None:
    rows = [{**SEED_ROW, "task_id": f"t{i}"} for i in range(20000)]
    path = _write(tmp_path / "big.jsonl", rows)
    start = time.perf_counter()
    assert check_tasks_file(path, registry) == []
    elapsed = time.perf_counter() - start
    assert elapsed < 2.5, f"{elapsed:.2f}s for 20k rows"  # budget: 5 s per 100k rows, with room for a busy machine


def test_task_row_round_trip_of_loaded_rows(tmp_path: Path) -> None:
    tasks = load_tasks(_write(tmp_path / "tasks.jsonl", [SEED_ROW]))
    assert TaskRow.model_validate(tasks[0].model_dump(exclude_none=True)) == tasks[0]
