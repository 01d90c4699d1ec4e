"""Options and helpers the ``evsys`` commands share: ``--set`` / ``--name`` / ``--output-dir``, the console,
and how a run's or an evaluation's outcome is printed."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from evsys.engine.overrides import parse_set, shorthand
from evsys.engine.run_setup import DRY_RUN_REPORT
from evsys.engine.status import Outcome
from evsys.logging.console import process_started
from evsys.schema.errors import ConfigError
from evsys.schema.plugins import default_registry
from evsys.schema.protocols import Callback

CONSOLE = "console"
"""The registered callback that prints progress (``evsys plugins`` lists it)."""


def override_options(command: Any) -> Any:
    """Add ``--set KEY=VALUE`` (repeatable), ``--name NAME`` and ``--output-dir DIR`` to a click command.

    The command receives one ``overrides`` argument: the :class:`Override` list, in the order given
    (``--name`` / ``--output-dir`` after every ``--set``).
    """
    @click.option(
        "--set",
        "set_",
        metavar="KEY=VALUE",
        multiple=True,
        help="Override a config key before validation, e.g. --set algorithm.params.max_steps=10 (repeatable; VALUE is YAML).",
    )
    @click.option("--name", default=None, metavar="NAME", help="Shorthand for --set name=NAME (the run directory's name).")
    @click.option("--output-dir", default=None, metavar="DIR", help="Shorthand for --set output_dir=DIR.")
    @functools.wraps(command)
    def wrapper(*args: Any, set_: tuple[str, ...], name: str | None, output_dir: str | None, **kwargs: Any) -> Any:
        overrides, problems = [], []
        for text in set_:
            try:
                overrides.append(parse_set(text))
            except ConfigError as exc:
                problems.extend(exc.problems)
        if problems:
            raise ConfigError(problems)
        if name is not None:
            overrides.append(shorthand("--name", "name", name))
        if output_dir is not None:
            overrides.append(shorthand("--output-dir", "output_dir", output_dir))
        return command(*args, overrides=overrides, **kwargs)

    return wrapper



@contextmanager
def console_progress(enabled: bool) -> Iterator[list[Callback]]:
    """The registered ``console`` callback (none with ``--quiet``), its clock started with the process,
    and its log handler removed however the command ends."""
    if not enabled:
        yield []
        return
    registration = default_registry().get("callback", CONSOLE)
    console = registration.load()(registration.params() if registration.params else None, started=process_started())
    try:
        yield [console]
    finally:
        console.detach()


def echo_outcome(outcome: Outcome, directory: Path, *, dry_run: bool) -> None:
    """Print Status / Metrics / Logs (and Error), then a dry run's report from ``directory``."""
    click.echo(str(outcome))
    report = directory / DRY_RUN_REPORT
    if dry_run and report.is_file():
        click.echo(report.read_text(encoding="utf-8").rstrip())
