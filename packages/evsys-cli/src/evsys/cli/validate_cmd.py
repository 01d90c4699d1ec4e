"""``evsys validate CONFIG [--deep]``: check a run config offline, every problem at once.

Each problem is one line on stderr, ``path:LINE:COL: field.path: message`` (a data or task file's
problems are ``file:LINE: ...``); warnings read ``...: warning: ...`` and do not fail. A valid config
prints one ``OK: ...`` line on stdout. Exit codes: 0 valid, 1 invalid, 2 usage error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import click

from evsys.cli.errors import EXIT_INVALID, EXIT_OK, print_problems
from evsys.cli.options import override_options
from evsys.engine.overrides import Override, load_config_with_overrides
from evsys.schema.errors import ConfigError, Problem
from evsys.schema.params import TrainingParams
from evsys.schema.plugins import default_registry
from evsys.schema.registry import PluginRegistry
from evsys.schema.validation import ValidatedConfig


@dataclass
class ValidationResult:
    """The outcome of validating one config: problems in order and the summary line."""

    path: str
    problems: list[Problem] = field(default_factory=list)
    validated: ValidatedConfig | None = None
    deep: bool = False
    deep_ran: bool = False
    prompts: str | None = None
    examples: int | None = None
    benchmarks: int = 0
    tasks: int = 0
    sandbox: str | None = None

    @property
    def errors(self) -> list[Problem]:
        """Problems that make the config invalid."""
        return [p for p in self.problems if p.severity != "warning"]

    @property
    def warnings(self) -> list[Problem]:
        """Problems reported but not failing validation."""
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when there are no errors."""
        return not self.errors

    def summary(self) -> str:
        """``OK: path (algorithm sdft, backend tinker, 2 steps; deep: ...)`` or ``FAILED: path (N errors)``."""
        warnings = _plural(len(self.warnings), "warning")
        if not self.ok:
            parts = [_plural(len(self.errors), "error")]
            if self.warnings:
                parts.append(warnings)
            text = ", ".join(parts)
            if self.deep and not self.deep_ran:
                text += "; deep checks not run until the config is valid"
            return f"FAILED: {self.path} ({text})"
        assert self.validated is not None
        config = self.validated.config
        facts = [f"algorithm {config.algorithm.kind}", f"backend {config.backend.kind}"]
        params = self.validated.algorithm_params
        steps = params.max_steps if isinstance(params, TrainingParams) else None
        if isinstance(steps, int):
            facts.append(_plural(steps, "step"))
        text = ", ".join(facts)
        if self.deep_ran:
            deep = []
            if self.examples is not None:
                deep.append(_plural(self.examples, "example"))
            if self.benchmarks:
                deep.append(f"{_plural(self.benchmarks, 'benchmark')} with {_plural(self.tasks, 'task')}")
            else:
                deep.append("no benchmarks")
            if self.prompts:
                deep.append(self.prompts)
            text += "; deep: " + ", ".join(deep)
            if self.sandbox is not None:
                text += f"; verifier programs: {self.sandbox}"
        if self.warnings:
            text += f"; {warnings}"
        return f"OK: {self.path} ({text})"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def broken_plugin_warnings(registry: PluginRegistry) -> list[Problem]:
    """One warning per plugin that failed to load or register."""
    return [
        Problem(
            f"plugin '{b.name}' ({b.distribution}{' ' + b.version if b.version else ''}) failed to load: {b.error}; "
            "its names are not registered (see `evsys plugins`)",
            severity="warning",
        )
        for b in registry.broken
    ]


def validate_config(
    path: str | Path,
    *,
    deep: bool = False,
    registry: PluginRegistry | None = None,
    overrides: Sequence[str | Override] = (),
) -> ValidationResult:
    """Validate the config at ``path`` (shallow, and with ``deep`` the offline deep checks); never raises for user errors.

    Relative paths inside the config are resolved against the current working directory.
    ``overrides`` are ``--set`` texts or :class:`~evsys.engine.overrides.Override` objects, applied first.
    """
    registry = registry if registry is not None else default_registry()
    result = ValidationResult(path=str(path), deep=deep)
    result.problems.extend(broken_plugin_warnings(registry))
    try:
        result.validated = load_config_with_overrides(path, registry, overrides)
    except ConfigError as exc:
        result.problems.extend(exc.problems)
        return result
    if deep:
        from evsys.cli.deep import run_deep_checks

        report = run_deep_checks(result.validated, registry)
        result.deep_ran = True
        result.problems.extend(report.problems)
        result.examples = report.examples
        result.benchmarks = report.benchmarks
        result.tasks = report.tasks
        result.sandbox = report.sandbox
        result.prompts = report.prompts
    return result


@click.command("validate")
@click.argument("config", metavar="CONFIG")
@click.option(
    "--deep",
    is_flag=True,
    help="Also check the data file, templates, benchmarks, verifiers, metrics, backend dependencies "
    "and model name (offline: no network, no model download, no torch).",
)
@override_options
def validate_command(config: str, deep: bool, overrides: list[Override]) -> None:
    """Check the run config CONFIG and report every problem at once.

    Problems are printed one per line as PATH:LINE:COL: FIELD: MESSAGE. Paths inside the config
    are relative to the current working directory. Exit status: 0 valid, 1 invalid, 2 usage error.

    \b
    Examples:
      evsys validate examples/sdft_walkthrough/config.yaml
      evsys validate examples/sdft_walkthrough/config.yaml --deep
      evsys validate my_run.yaml --set algorithm.params.max_steps=100 --name longer
    """
    result = validate_config(config, deep=deep, overrides=overrides)
    print_problems(result.problems)
    if result.ok:
        click.echo(result.summary())
        raise click.exceptions.Exit(EXIT_OK)
    click.echo(result.summary(), err=True)
    raise click.exceptions.Exit(EXIT_INVALID)
