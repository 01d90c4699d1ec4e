"""``evsys-verify TASKS PREDICTIONS --metrics pass@1,maj@4``: score predictions without any training stack.

TASKS is a ``tasks.jsonl`` or a benchmark directory holding one. PREDICTIONS is a JSONL file of
rows with a ``task_id`` (or ``id``) and an ``answer`` (or ``output`` / ``completion`` / ``response``);
several rows for one task are several samples, ordered by ``sample_index`` when given, else by line.
The tasks file is checked as ``evsys validate --deep`` does (unknown verifier kinds, functions or
options fail before anything is scored). Prints the metrics as one JSON line, then a table.
Exit status: 0 scored, 2 bad input.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import click

from evsys.schema.errors import DataError, EvsysError, Location, Problem

__all__ = ["main", "read_predictions"]

ANSWER_KEYS = ("answer", "output", "completion", "response", "prediction")


def read_predictions(path: str | Path) -> dict[str, list[tuple[int, int, str]]]:
    """Predictions by task id: ``(sample_index, line, answer)`` tuples; bad lines raise :class:`DataError`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(Problem("predictions file not found", Location(str(path))))
    problems: list[Problem] = []
    by_task: dict[str, list[tuple[int, int, str]]] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = Location(str(path), number)
            try:
                row = json.loads(line)
            except ValueError as exc:
                problems.append(Problem(f"invalid JSON: {exc}", where))
                continue
            if not isinstance(row, dict):
                problems.append(Problem("a prediction must be a JSON object", where))
                continue
            task_id = row.get("task_id", row.get("id"))
            if task_id is None or isinstance(task_id, (dict, list, bool)):
                problems.append(Problem("a prediction needs a 'task_id' (or 'id')", where, "task_id"))
                continue
            key = next((k for k in ANSWER_KEYS if k in row), None)
            if key is None or row[key] is None:
                problems.append(Problem("a prediction needs an 'answer'", where, "answer"))
                continue
            answer = row[key] if isinstance(row[key], str) else json.dumps(row[key])
            index = row.get("sample_index")
            order = index if isinstance(index, int) and not isinstance(index, bool) else 1 << 62
            by_task.setdefault(str(task_id), []).append((order, number, answer))
            if len(problems) >= 50:
                break
    if problems:
        raise DataError(problems)
    return by_task


def _table(metrics: dict[str, float | None]) -> str:
    width = max([len("metric"), *(len(name) for name in metrics)])
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  ------"]
    for name, value in metrics.items():
        text = "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"
        lines.append(f"{name:<{width}}  {text}")
    return "\n".join(lines)


class _Lines(logging.Formatter):
    """``evsys-verify: warning: message``, as the command's own warnings read."""

    def format(self, record: logging.LogRecord) -> str:
        return f"evsys-verify: {record.levelname.lower()}: {record.getMessage()}"


def _version() -> str:
    try:
        return metadata.version("evsys-verifiers")
    except metadata.PackageNotFoundError:
        return "unknown"


@click.command("evsys-verify", context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), "--version", "-V", prog_name="evsys-verify")
@click.argument("tasks")
@click.argument("predictions")
@click.option("--metrics", default="pass@1", show_default=True, help="Comma-separated metrics, e.g. pass@1,maj@4.")
@click.option("--output", "-o", help="Write scored prediction rows (JSONL) here.")
@click.option(
    "--workers", type=click.IntRange(min=1), default=None, help="Threads for program verifiers (default: CPU cores)."
)
@click.option(
    "--format", "output_format", type=click.Choice(["both", "json", "table"]), default="both", show_default=True,
    help="What to print.",
)  # fmt: skip
@click.option("--strict", is_flag=True, help="A task without predictions is an error.")
@click.option(
    "--sandbox",
    type=click.Choice(["auto", "bwrap", "none"]),
    default=None,
    help="Where verifier programs run: bwrap demands the bubblewrap sandbox, none the plain runner, auto "
    "(default) bubblewrap where it works. Default: $EVSYS_VERIFIER_SANDBOX, else auto.",
)
def command(
    tasks: str,
    predictions: str,
    metrics: str,
    output: str | None,
    workers: int | None,
    output_format: str,
    strict: bool,
    sandbox: str | None,
) -> dict[str, Any]:
    """Score model predictions against benchmark tasks and print metrics (JSON, then a table).

    TASKS is a tasks.jsonl, or a benchmark directory holding one. PREDICTIONS is JSONL rows with a
    task_id and an answer; several rows for one task are several samples. Exit status: 0 scored,
    2 bad input.
    """
    from evsys.verifiers import sandbox as sandboxes
    from evsys.verifiers.scoring import _resolve_registry, score_tasks
    from evsys.verifiers.tasks import TASKS_FILE, check_tasks_file, load_benchmark_dir, load_tasks

    if not logging.getLogger().handlers:  # library warnings (e.g. programs run unsandboxed) read like ours
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Lines())
        logging.getLogger().addHandler(handler)
    if sandbox is not None:
        sandboxes.set_sandbox(sandbox)
    if sandboxes.process_setting() == "bwrap":
        sandboxes.resolve_sandbox()  # raises now, before anything is scored, when bubblewrap cannot run
    registry = _resolve_registry(None)
    tasks_path = Path(tasks)
    if tasks_path.is_dir():
        if not (tasks_path / TASKS_FILE).is_file():
            load_benchmark_dir(tasks_path)  # raises: the directory has no tasks.jsonl
        tasks_path = tasks_path / TASKS_FILE
    problems = check_tasks_file(tasks_path, registry)
    if problems:  # bad rows, unknown verifier kinds / functions / options: fail before scoring anything
        raise DataError(problems)
    loaded = load_tasks(tasks_path)
    by_task = read_predictions(predictions)
    known = {task.resolved_id for task in loaded}
    unknown = [(rows[0][1], task_id) for task_id, rows in by_task.items() if task_id not in known]
    if unknown:
        raise DataError(
            [
                Problem(f"unknown task_id '{task_id}'", Location(predictions, line), "task_id")
                for line, task_id in sorted(unknown)[:50]
            ]
        )
    missing = [task.resolved_id for task in loaded if task.resolved_id not in by_task]
    if missing and strict:
        raise DataError(
            [Problem(f"task '{task_id}' has no predictions", Location(predictions)) for task_id in missing[:50]]
        )
    if missing:
        print(
            f"evsys-verify: warning: {len(missing)} of {len(loaded)} tasks have no predictions and are left out",
            file=sys.stderr,
        )
    scored = [task for task in loaded if task.resolved_id in by_task]
    answers = [[answer for _, _, answer in sorted(by_task[task.resolved_id])] for task in scored]
    names = [name.strip() for name in metrics.split(",") if name.strip()]
    result = score_tasks(scored, answers, names, registry=registry, max_workers=workers)
    if output:
        with open(output, "w", encoding="utf-8") as handle:
            for row in result.predictions:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    summary = {
        "metrics": result.metrics,
        "tasks": len(scored),
        "samples": sum(len(a) for a in answers),
        "errors": result.errors,
    }
    if output_format in ("both", "json"):
        print(json.dumps(summary))
    if output_format == "both":
        print()
    if output_format in ("both", "table"):
        print(_table(result.metrics))
        print(f"\n{summary['tasks']} tasks, {summary['samples']} samples, {summary['errors']} verifier errors")
    return summary


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse ``argv``, score, print; returns the JSON summary. Raises :class:`EvsysError` on bad input
    and :class:`click.ClickException` on a usage error."""
    return command.main(args=argv, prog_name="evsys-verify", standalone_mode=False)  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``evsys-verify``; returns the exit status (0 scored, 2 bad input)."""
    try:
        outcome = command.main(args=argv, prog_name="evsys-verify", standalone_mode=False)
    except EvsysError as exc:
        for problem in exc.problems:
            print(f"evsys-verify: {problem.format()}", file=sys.stderr)
        return 2
    except click.ClickException as exc:
        exc.show()
        return 2
    except click.Abort:
        return 1
    except ValueError as exc:
        print(f"evsys-verify: {exc}", file=sys.stderr)
        return 2
    return outcome if isinstance(outcome, int) else 0  # --help / --version return their exit status


if __name__ == "__main__":
    sys.exit(main())
