"""Benchmark tasks: read and check ``tasks.jsonl``, and get a task's prompt.

A line is a :class:`evsys.schema.rows.TaskRow`::

    {"task_id": "val_0", "instruction": "Capital of Germany?",
     "verifier": {"kind": "in_process", "fn_name": "contains", "expected": "Berlin"}}

``id`` is accepted for ``task_id``; exactly one of ``instruction`` / ``prompt`` / ``question`` /
``messages``; a top-level ``target`` / ``answer`` stands in for ``verifier.expected``; without a
``verifier`` (or without ``fn_name``) the function is ``exact_match``.
"""

from __future__ import annotations

import gc
import inspect
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from evsys.schema.errors import DataError, Location, Problem
from evsys.schema.rows import TaskRow, VerifierSpec
from evsys.schema.suggest import did_you_mean
from evsys.schema.targets import target_problem

__all__ = [
    "DEFAULT_FUNCTION",
    "MAX_PROBLEMS",
    "check_tasks_file",
    "load_benchmark_dir",
    "load_tasks",
    "runs_programs",
    "task_messages",
    "task_prompt",
    "verifier_problems",
]

DEFAULT_FUNCTION = "exact_match"
MAX_PROBLEMS = 50
TASKS_FILE = "tasks.jsonl"
_TYPE_TAGS = {"str", "int", "float", "bool", "none", "dict", "list", "any"}
_MODEL_FIELDS = {"": set(TaskRow.model_fields), "verifier": set(VerifierSpec.model_fields)}
_PYTHON_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_NEEDS_NO_EXPECTED = {"format_check", "python_tests"}


def _field_of(loc: tuple[Any, ...]) -> list[str]:
    parts = []
    for part in loc:
        text = str(part)
        if isinstance(part, str) and (text in _TYPE_TAGS or "[" in text or "-" in text):
            continue
        parts.append(text)
    return parts


def _row_problems(exc: ValidationError, text: str, location: Location) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[str] = set()
    for error in exc.errors(include_url=False):
        if error["type"] == "json_invalid":
            try:
                json.loads(text)
                message = f"invalid JSON: {error['msg']}"
            except ValueError as json_error:
                message = f"invalid JSON: {json_error}"
            return [Problem(message, location)]
        parts = _field_of(tuple(error["loc"]))
        field = ".".join(parts)
        if field in seen:
            continue
        seen.add(field)
        message = str(error["msg"])
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if error["type"] == "extra_forbidden" and parts:
            parent = ".".join(parts[:-1])
            message = f"unknown key '{parts[-1]}'{did_you_mean(parts[-1], _MODEL_FIELDS.get(parent, ()))}"
        elif error["type"] == "model_type" and not parts:
            message = "a task must be a JSON object"
        problems.append(Problem(message, location, field or None))
    return problems


def _lines(path: Path) -> Iterator[tuple[int, str | UnicodeDecodeError]]:
    """Non-blank lines with their numbers; a line that is not UTF-8 yields its decode error instead."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, exc
                continue
            if line.strip():
                yield number, line


def _non_json_constant(line: str) -> str | None:
    """``NaN`` / ``Infinity`` / ``-Infinity`` when ``line`` uses one as a value (pydantic's parser accepts them; JSON does not)."""
    found: list[str] = []

    def reject(name: str) -> None:
        found.append(name)

    try:
        json.loads(line, parse_constant=reject)
    except ValueError:
        return None
    return found[0] if found else None


def _read(path: Path) -> list[tuple[int, TaskRow | None, list[Problem]]]:
    if not path.is_file():
        raise DataError(Problem("tasks file not found", Location(str(path))))
    rows: list[tuple[int, TaskRow | None, list[Problem]]] = []
    name = str(path)
    validate = TaskRow.model_validate_json
    # Many long-lived rows make the cyclic GC rescan them again and again (2-3x slower on 100k rows);
    # rows hold no cycles, so collection pauses while reading.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for number, line in _lines(path):
            if isinstance(line, UnicodeDecodeError):
                rows.append((number, None, [Problem(f"not valid UTF-8 (byte {line.start})", Location(name, number))]))
                continue
            if ("NaN" in line or "Infinity" in line) and (constant := _non_json_constant(line)):
                rows.append((number, None, [Problem(f"{constant} is not valid JSON", Location(name, number))]))
                continue
            try:
                rows.append((number, validate(line), []))
            except ValidationError as exc:
                rows.append((number, None, _row_problems(exc, line, Location(name, number))))
    except OSError as exc:
        raise DataError(Problem(f"cannot read file: {exc.strerror}", Location(name))) from None
    finally:
        if gc_was_enabled:
            gc.enable()
    return rows


def _duplicate_problems(rows: list[tuple[int, TaskRow | None, list[Problem]]], name: str) -> list[Problem]:
    first: dict[str, int] = {}
    problems = []
    for number, task, _ in rows:
        if task is None:
            continue
        task_id = task.resolved_id
        if task_id in first:
            problems.append(
                Problem(
                    f"duplicate task_id '{task_id}' (first at line {first[task_id]})", Location(name, number), "task_id"
                )
            )
        else:
            first[task_id] = number
    return problems


def _capped(problems: list[Problem], cap: int) -> list[Problem]:
    if len(problems) <= cap:
        return problems
    return [*problems[:cap], Problem(f"... and {len(problems) - cap} more problems")]


def load_tasks(path: str | Path) -> list[TaskRow]:
    """Read a ``tasks.jsonl``; every bad line (up to :data:`MAX_PROBLEMS`) is reported in one
    :class:`~evsys.schema.errors.DataError` whose problems read ``path:LINE: field: message``."""
    path = Path(path)
    rows = _read(path)
    problems = [p for _, _, row_problems in rows for p in row_problems]
    problems += _duplicate_problems(rows, str(path))
    if problems:
        problems.sort(key=lambda p: (p.location.line or 0) if p.location else 0)
        raise DataError(_capped(problems, MAX_PROBLEMS))
    tasks = [task for _, task, _ in rows if task is not None]
    if not tasks:
        raise DataError(Problem("has no tasks", Location(str(path))))
    return tasks


def load_benchmark_dir(directory: str | Path) -> list[TaskRow]:
    """Read the ``tasks.jsonl`` of a benchmark directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(
            Problem("benchmark directory has no tasks.jsonl (the directory does not exist)", Location(str(directory)))
        )
    tasks_file = directory / TASKS_FILE
    if not tasks_file.is_file():
        raise DataError(Problem("benchmark directory has no tasks.jsonl", Location(str(directory))))
    return load_tasks(tasks_file)


# ---------------------------------------------------------------- deep checks

_SIGNATURES: dict[str, tuple[set[str], bool] | None] = {}


def _builtin_options(fn_name: str, target: str) -> tuple[set[str], bool] | None:
    """The option names of a built-in function, and whether it needs ``expected``; None for others."""
    if not target.startswith("evsys.verifiers.functions:"):
        return None
    if target not in _SIGNATURES:
        from evsys.schema.registry import load_object

        try:
            params = inspect.signature(load_object(target)).parameters
        except Exception:
            _SIGNATURES[target] = None
            return None
        names = {n for n, p in list(params.items())[2:] if p.kind is not inspect.Parameter.VAR_KEYWORD}
        _SIGNATURES[target] = (names, fn_name not in _NEEDS_NO_EXPECTED)
    return _SIGNATURES[target]


def verifier_problems(
    task: TaskRow, registry: Any, location: Location, cache: dict[tuple[str, str], Any]
) -> list[Problem]:
    """What is wrong with a valid task's verifier: an unknown kind or function, unknown options, a
    missing expected answer, a malformed python target or subprocess command. ``cache`` (a dict the
    caller keeps across tasks) memoizes registry look-ups."""
    spec = task.verifier or VerifierSpec()
    kind = spec.kind
    key = ("verifier", kind)
    if key not in cache:
        cache[key] = registry.find("verifier", kind)
    if cache[key] is None:
        return [Problem(_unknown(registry, "verifier", kind, "verifier kind"), location, "verifier.kind")]
    problems = _target_problems(cache, ("target", kind), cache[key].target_problem, location, "verifier.kind")
    if spec.sandbox == "bwrap":
        from evsys.verifiers.sandbox import INSTALL_HINT, bwrap_problem

        problem = bwrap_problem()
        if problem is not None:
            message = f"sandbox 'bwrap' is required but {problem}: {INSTALL_HINT}"
            problems.append(Problem(message, location, "verifier.sandbox"))
    if kind == "in_process":
        fn_name = spec.fn_name or DEFAULT_FUNCTION
        key = ("verifier_function", fn_name)
        if key not in cache:
            cache[key] = registry.find("verifier_function", fn_name)
        registration = cache[key]
        if registration is None:
            return [Problem(_unknown(registry, "verifier_function", fn_name, "verifier function"), location, "verifier.fn_name")]
        problems += _target_problems(cache, ("target", f"fn:{fn_name}"), registration.target_problem, location, "verifier.fn_name")
        info = _builtin_options(fn_name, registration.target)
        if info is not None:
            names, needs_expected = info
            for option in spec.options:
                if option not in names and option != "threshold":
                    hint = did_you_mean(option, names)
                    problems.append(
                        Problem(
                            f"unknown option '{option}' for '{fn_name}'{hint}", location, f"verifier.options.{option}"
                        )
                    )
            if needs_expected and task.resolved_expected is None:
                problems.append(
                    Problem(
                        f"'{fn_name}' needs an expected answer (verifier.expected, target or answer)",
                        location,
                        "verifier",
                    )
                )
        extract = spec.options.get("extract")
        if extract is not None:
            from evsys.verifiers.extract import EXTRACTORS

            if extract not in EXTRACTORS:
                hint = did_you_mean(str(extract), EXTRACTORS)
                problems.append(Problem(f"unknown extract '{extract}'{hint}", location, "verifier.options.extract"))
    elif kind == "python":
        if not spec.fn_name or not _PYTHON_TARGET.match(spec.fn_name):
            problems.append(
                Problem(
                    f"a python verifier needs fn_name 'module:function', got {spec.fn_name!r}",
                    location,
                    "verifier.fn_name",
                )
            )
        else:
            fn_name = spec.fn_name

            def python_target() -> str | None:
                problem = target_problem(fn_name)
                return f"python verifier {fn_name}: {problem}" if problem else None

            problems += _target_problems(cache, ("target", fn_name), python_target, location, "verifier.fn_name")
    elif kind == "subprocess" and not spec.command:
        problems.append(Problem("a subprocess verifier needs a command", location, "verifier.command"))
    return problems


def _unknown(registry: Any, kind: str, name: str, label: str) -> str:
    """``unknown verifier function 'x' (did you mean ...)``, or which plugins share the name."""
    if len(registry.candidates(kind, name)) > 1:
        return str(registry.missing_message(kind, name))
    return f"unknown {label} '{name}'{did_you_mean(name, registry.names(kind))}"


def _target_problems(
    cache: dict[tuple[str, str], Any], key: tuple[str, str], check: Callable[[], str | None], location: Location, field: str
) -> list[Problem]:
    """A verifier's broken ``module:attr`` target, reported at the first task that names it (``cache`` remembers)."""
    if key in cache:
        return []
    cache[key] = problem = check()
    return [Problem(problem, location, field)] if problem else []


def check_tasks_file(path: str | Path, registry: Any) -> list[Problem]:
    """Check a ``tasks.jsonl`` for ``evsys validate --deep`` without importing any verifier.

    Every row must be a valid task, its verifier kind and ``in_process`` function registered in
    ``registry`` (with a "did you mean" hint), built-in options known, python targets of the form
    ``module:function``, task ids unique. Problems are located ``file:line``.
    """
    path = Path(path)
    try:
        rows = _read(path)
    except DataError as exc:
        return exc.problems
    name = str(path)
    problems: list[Problem] = []
    cache: dict[tuple[str, str], Any] = {}
    for number, task, row_problems in rows:
        if task is None:
            problems.extend(row_problems)
        else:
            problems.extend(verifier_problems(task, registry, Location(name, number), cache))
    problems += _duplicate_problems(rows, name)
    if not rows:
        problems.append(Problem("has no tasks", Location(name)))
    problems.sort(key=lambda p: (p.location.line or 0) if p.location else 0)
    return _capped(problems, 100)


PROGRAM_VERIFIERS = (b'"python_tests"', b'"subprocess"')


def runs_programs(path: str | Path) -> bool:
    """Whether a ``tasks.jsonl`` names a verifier that runs programs (``python_tests``, the ``subprocess``
    kind); a quick scan of the bytes, for ``validate --deep``'s report of the sandbox."""
    tail = b""
    with Path(path).open("rb") as handle:
        while chunk := handle.read(1 << 20):
            window = tail + chunk
            if any(name in window for name in PROGRAM_VERIFIERS):
                return True
            tail = chunk[-16:]
    return False


# ---------------------------------------------------------------- prompts


def task_prompt(task: TaskRow) -> str:
    """The task's prompt text: ``instruction`` / ``prompt`` / ``question``, or the last user message."""
    for text in (task.instruction, task.prompt, task.question):
        if text is not None:
            return text
    for message in reversed(task.messages or []):
        if message.role == "user":
            return message.content
    return task.messages[-1].content if task.messages else ""


def task_messages(task: TaskRow) -> list[dict[str, str]]:
    """The chat messages to render: the task's ``messages``, or one user turn holding its prompt."""
    if task.messages is not None:
        return [{"role": m.role, "content": m.content} for m in task.messages]
    return [{"role": "user", "content": task_prompt(task)}]
