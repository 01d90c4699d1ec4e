"""``evsys validate --deep``: the offline checks that look past the config file.

Everything here runs without the network, without downloading a model and without importing
torch: plugins are consulted through their registrations (params models, ``meta``) and the light
modules those name (a backend's model checker, the verifiers' task checker), never through the
implementations a run loads.

Paths in the config (``data.path``, ``metadata.benchmark[].path``) are relative to the current
working directory, as ``evsys run`` reads them.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from evsys.schema.errors import EvsysError, Problem
from evsys.schema.protocols import RenderedChats
from evsys.schema.registry import PluginRegistry, Registration, load_object, metric_family
from evsys.schema.validation import ValidatedConfig
from evsys.schema.yaml_source import FieldPath, format_field_path

TASKS_FILE = "tasks.jsonl"
MAX_ROW_PROBLEMS = 100


@dataclass
class DeepReport:
    """What the deep checks found, and what they counted for the summary line."""

    problems: list[Problem] = field(default_factory=list)
    examples: int | None = None
    benchmarks: int = 0
    tasks: int = 0
    sandbox: str | None = None  # where verifier programs will run, when a benchmark's tasks run programs
    prompts: str | None = None  # the longest rendered prompts against the context window (backend prompt_checker)

    @property
    def errors(self) -> list[Problem]:
        """The problems that fail validation (warnings excluded)."""
        return [p for p in self.problems if p.severity != "warning"]


class _Checker:
    """Runs the deep checks of one validated config, collecting problems in config order."""

    def __init__(self, validated: ValidatedConfig, registry: PluginRegistry) -> None:
        self.validated = validated
        self.config = validated.config
        self.document = validated.document
        self.registry = registry
        self.report = DeepReport()
        self.broken_targets: set[tuple[str, str]] = set()

    # -- helpers -----------------------------------------------------------------------------

    def at(self, field_path: FieldPath, message: str, severity: str = "error") -> None:
        """Record a problem located at a field of the config."""
        self.report.problems.append(
            Problem(message, self.document.locate(field_path), format_field_path(field_path), severity)
        )

    def add(self, problems: list[Problem], default_field: FieldPath) -> None:
        """Record problems from a plugin, locating those that carry no location at their field."""
        for problem in problems:
            if problem.location is None:
                field_path: FieldPath = tuple(problem.field.split(".")) if problem.field else default_field
                label = problem.field or (format_field_path(field_path) if field_path else None)
                problem = dataclasses.replace(problem, location=self.document.locate(field_path), field=label)
            self.report.problems.append(problem)

    def missing_path_message(self, raw: str, what: str) -> str:
        """'file not found' with a hint when the path exists relative to the config file instead."""
        message = f"{what} not found: {raw} (paths are relative to the working directory, {Path.cwd()})"
        beside = Path(self.document.path).parent / raw
        if not Path(raw).is_absolute() and beside.exists() and Path(self.document.path).parent != Path("."):
            message += f"; did you mean '{beside.as_posix()}'?"
        return message

    # -- the checks ----------------------------------------------------------------------------

    def targets(self) -> None:
        """Every registered ``module:attr`` target the run will load exists: module found, attribute in its source.

        Nothing is imported but the targets' parent packages; a broken target is one line naming the plugin.
        """
        config = self.config
        used: list[tuple[str, str, FieldPath]] = [
            ("backend", config.backend.kind, ("backend", "kind")),
            ("algorithm", config.algorithm.kind, ("algorithm", "kind")),
            *(("callback", spec.kind, ("callbacks", i, "kind")) for i, spec in enumerate(config.callbacks)),
            ("source", config.data.source_kind, ("data", "source_kind")),
        ]
        if config.data.transform:
            used.append(("transform", config.data.transform, ("data", "transform")))
        for kind, name, field_path in used:
            registration = self.registry.find(kind, name)
            problem = registration.target_problem() if registration is not None else None
            if problem is not None:
                self.broken_targets.add((kind, name))
                self.at(field_path, problem)

    def backend(self) -> None:
        """The backend's optional dependencies are installed and its model check passes."""
        registration = self.registry.get("backend", self.config.backend.kind)
        missing = registration.missing_requirement()
        if missing:
            self.at(("backend", "kind"), missing)
        checker_target = registration.meta.get("checker")
        if not checker_target:
            return
        try:
            checker = load_object(checker_target)
        except Exception as exc:  # a plugin's broken checker is reported, never a traceback
            self.at(
                ("backend", "kind"),
                f"cannot load the model check of backend '{registration.name}' ({checker_target}): "
                f"{type(exc).__name__}: {exc}",
            )
            return
        try:
            problems = _call_checker(
                checker, self.config.model.name, self.validated.backend_params, self.config.model.revision
            )
        except EvsysError as exc:
            problems = exc.problems
        except Exception as exc:  # a plugin's failing check is reported, never a traceback
            self.at(
                ("model", "name"),
                f"the model check of backend '{registration.name}' failed: {type(exc).__name__}: {exc}",
            )
            return
        self.add(list(problems or []), ("model", "name"))

    def callbacks(self) -> None:
        """Each callback's optional dependencies (a tracker's library) are installed."""
        for index, spec in enumerate(self.config.callbacks):
            missing = self.registry.get("callback", spec.kind).missing_requirement()
            if missing:
                self.at(("callbacks", index, "kind"), missing)

    def templates(self, registration: Registration) -> dict[str, frozenset[str]]:
        """Template text -> extra allowed placeholders, from the algorithm's validated params."""
        declared: Mapping[str, frozenset[str]] = registration.meta.get("templates") or {}
        values = self.validated.algorithm_params.model_dump(include=set(declared))
        checks: dict[str, frozenset[str]] = {}
        from evsys.data.templates import template_fields

        for name, extra in declared.items():
            text = values.get(name)
            if not isinstance(text, str):
                continue
            try:
                template_fields(text)
            except ValueError as exc:
                self.at(("algorithm", "params", name), f"invalid template: {exc}")
                continue
            allowed = frozenset(extra)
            checks[text] = checks[text] & allowed if text in checks else allowed
        return checks

    def data(self) -> None:
        """The data file exists, the source and transform load, and every row is a valid example."""
        from evsys.data.examples import check_examples_file, source_options
        from evsys.data.hf import looks_like_a_local_file
        from evsys.data.transforms import load_transform

        spec = self.config.data
        algorithm = self.registry.get("algorithm", self.config.algorithm.kind)
        templates = self.templates(algorithm)
        path = Path(spec.path)
        if spec.source_kind == "hf" and not path.exists() and looks_like_a_local_file(spec.path):
            self.at(("data", "path"), self.missing_path_message(spec.path, "file"))
            return
        if spec.source_kind == "jsonl":
            if not path.exists():
                self.at(("data", "path"), self.missing_path_message(spec.path, "file"))
                return
            if path.is_dir():
                self.at(("data", "path"), f"is a directory, expected a file: {spec.path}")
                return
        ok = not self.broken_targets & {("source", spec.source_kind), ("transform", spec.transform or "")}
        if not ok:
            return
        try:
            self.registry.get("source", spec.source_kind).load()
        except EvsysError as exc:
            ok = False
            self.add(exc.problems, ("data", "source_kind"))
        if spec.transform:
            try:
                load_transform(self.registry.get("transform", spec.transform))
            except EvsysError as exc:
                ok = False
                self.add(exc.problems, ("data", "transform"))
        row_models = tuple(algorithm.meta.get("row_models") or ())
        if not ok or not row_models:
            return
        try:
            valid, problems = check_examples_file(
                spec.path,
                row_models,
                options=source_options(spec, offline=True),
                templates=templates,
                registry=self.registry,
                algorithm=self.config.algorithm.kind,
            )
        except EvsysError as exc:
            self.add(exc.problems, ("data", "path"))
            return
        self.report.examples = valid
        self.report.problems.extend(problems)

    def prompts(self) -> None:
        """The backend's prompt check on the run's chats (rendered and measured against the context window)."""
        registration = self.registry.get("backend", self.config.backend.kind)
        target = registration.meta.get("prompt_checker")
        if not target or self.report.examples is None or self.report.errors:
            return
        try:
            checker = load_object(target)
            chats = _run_chats(self.validated, self.registry)
            problems, summary = checker(self.config.model.name, self.validated.backend_params, chats.prompts, chats.trained, chats.max_new_tokens)
        except EvsysError as exc:
            self.add(exc.problems, ("data", "path"))
            return
        except Exception as exc:  # a plugin's failing check is reported, never a traceback
            self.at(("backend", "kind"), f"the prompt check of backend '{registration.name}' failed: {type(exc).__name__}: {exc}")
            return
        self.add(list(problems or []), ("model", "name"))
        self.report.prompts = summary

    def benchmarks(self) -> None:
        """Each benchmark directory holds a valid tasks.jsonl and its metrics fit its num_samples."""
        for index, bench in enumerate(self.config.metadata.benchmark):
            at: FieldPath = ("metadata", "benchmark", index)
            self.report.benchmarks += 1
            for m_index, metric in enumerate(bench.metrics):
                family = metric_family(metric)
                if family is not None and family[1] > bench.num_samples:
                    self.at(
                        (*at, "metrics", m_index),
                        f"{metric} needs {family[1]} samples per task but num_samples is {bench.num_samples}; "
                        f"set num_samples: {family[1]} (or more)",
                    )
            if bench.data is not None:
                self.dataset_tasks(bench, at)
                continue
            directory = Path(bench.path or "")
            if not directory.exists():
                self.at((*at, "path"), self.missing_path_message(bench.path, "directory"))
                continue
            if not directory.is_dir():
                self.at((*at, "path"), f"expected a directory holding {TASKS_FILE}, got a file: {bench.path}")
                continue
            tasks = directory / TASKS_FILE
            if not tasks.is_file():
                self.at((*at, "path"), f"no {TASKS_FILE} in {bench.path}")
                continue
            try:
                from evsys.verifiers.tasks import check_tasks_file
            except ImportError as exc:
                self.at((*at, "path"), f"cannot check {TASKS_FILE}: evsys-verifiers is not importable ({exc})")
                continue
            try:
                problems = check_tasks_file(tasks, self.registry)
            except EvsysError as exc:
                problems = exc.problems
            self.report.problems.extend(problems)
            self.report.tasks += _count_rows(tasks)
            self.sandbox(tasks, at)

    def sandbox(self, tasks: Path, at: FieldPath) -> None:
        """Which sandbox the benchmark's verifier programs will run in; unsandboxed is a warning."""
        from evsys.verifiers import sandbox
        from evsys.verifiers.runner import plugged_runner
        from evsys.verifiers.tasks import runs_programs

        if self.report.sandbox is not None or not runs_programs(tasks):
            return
        setting = sandbox.process_setting()
        self.report.sandbox = sandbox.describe_sandbox()
        if setting == "none" or (plugged_runner() is not None and setting != "bwrap"):
            return
        problem = sandbox.bwrap_problem()
        if problem is None:
            return
        if setting == "bwrap":
            message = f"its verifier programs need the sandbox ({sandbox.SANDBOX_ENV}=bwrap) but {problem}"
            self.at((*at, "path"), f"{message}: {sandbox.INSTALL_HINT}")
        else:
            message = f"its verifier programs will run unsandboxed: {problem}; {sandbox.INSTALL_HINT}"
            self.at((*at, "path"), message, "warning")

    def dataset_tasks(self, bench: Any, at: FieldPath) -> None:
        """Every row of a benchmark's ``data`` is a valid task whose verifier is registered."""
        from evsys.data.benchmarks import iter_dataset_tasks

        try:
            from evsys.verifiers.tasks import verifier_problems
        except ImportError as exc:
            self.at((*at, "data"), f"cannot check the benchmark's tasks: evsys-verifiers is not importable ({exc})")
            return
        cache: dict[tuple[str, str], Any] = {}
        problems: list[Problem] = []
        first: dict[str, Any] = {}
        hidden = 0
        try:
            for location, task, row_problems in iter_dataset_tasks(bench, self.registry, offline=True):
                if task is not None:
                    self.report.tasks += 1
                    row_problems = verifier_problems(task, self.registry, location, cache)  # type: ignore[arg-type]
                    task_id = task.resolved_id  # type: ignore[attr-defined]
                    if task_id in first:
                        row_problems = [*row_problems, Problem(f"duplicate task_id '{task_id}' (first at {first[task_id]})", location, "task_id")]
                    first.setdefault(task_id, location)
                for problem in row_problems:
                    if len(problems) < MAX_ROW_PROBLEMS:
                        problems.append(problem)
                    else:
                        hidden += 1
        except EvsysError as exc:
            self.add(exc.problems, (*at, "data", "path"))
            return
        if hidden:
            problems.append(Problem(f"... and {hidden} more problem(s)", problems[-1].location))
        self.report.problems.extend(problems)


def _call_checker(checker: Callable[..., Any], model_name: str, params: BaseModel, revision: str | None) -> Any:
    try:
        accepts_revision = "revision" in inspect.signature(checker).parameters
    except (TypeError, ValueError):
        accepts_revision = False
    if accepts_revision:
        return checker(model_name, params, revision=revision)
    return checker(model_name, params)


def _run_chats(validated: ValidatedConfig, registry: PluginRegistry) -> RenderedChats:
    """The chats a run renders from its training examples, as the algorithm declares them (``Algorithm.chats``)."""
    from evsys.engine.run_setup import load_training_examples

    examples = load_training_examples(validated, registry)
    algorithm = registry.get("algorithm", validated.config.algorithm.kind).load()
    return algorithm.chats(validated.algorithm_params, examples)


def _count_rows(path: Path) -> int:
    count = 0
    with path.open("rb") as handle:
        for raw in handle:
            if raw.strip():
                count += 1
    return count


def run_deep_checks(validated: ValidatedConfig, registry: PluginRegistry) -> DeepReport:
    """Run every deep check; problems come in config order (plugin targets, model, backend, callbacks, algorithm, data, benchmarks)."""
    checker = _Checker(validated, registry)
    for step in (checker.targets, checker.backend, checker.callbacks, checker.data, checker.prompts, checker.benchmarks):
        try:
            step()
        except EvsysError as exc:
            checker.add(exc.problems, ())
    return checker.report


def deep_check(validated: ValidatedConfig, registry: PluginRegistry) -> list[Problem]:
    """The problems (errors and warnings) :func:`run_deep_checks` finds in a shallow-valid config."""
    return run_deep_checks(validated, registry).problems


__all__ = ["TASKS_FILE", "DeepReport", "deep_check", "run_deep_checks"]
