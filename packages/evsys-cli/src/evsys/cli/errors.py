"""How the CLI reports problems: one line each on stderr, never a traceback for a user mistake."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import click

from evsys.schema.errors import EvsysError, Problem

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

def print_problems(problems: Iterable[Problem]) -> None:
    """Print each problem as one line on stderr (``file:line:col: field: message``)."""
    for problem in problems:
        click.echo(problem.format(), err=True)


@dataclass
class Outcome:
    """The exit code the CLI ends with."""

    code: int = EXIT_OK


@contextmanager
def report_errors() -> Iterator[Outcome]:
    """Run CLI code; usage errors exit 2, :class:`EvsysError` prints its problems and exits 1."""
    outcome = Outcome()
    try:
        yield outcome
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        outcome.code = EXIT_SIGINT
    except click.exceptions.Exit as exc:
        outcome.code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        outcome.code = exc.exit_code if exc.exit_code != 1 else EXIT_USAGE
    except EvsysError as exc:
        print_problems(exc.problems)
        outcome.code = EXIT_INVALID
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        outcome.code = EXIT_SIGINT
    except BrokenPipeError:
        sys.stderr.close()
        outcome.code = EXIT_INVALID
