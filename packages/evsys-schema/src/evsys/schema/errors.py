"""Errors a user can cause, each printable as one line that names where it happened."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """A place in a user's file: path, 1-based line and column (either may be unknown).

    ``unit`` names what ``line`` counts when it is not a text line: a dataset's rows print as
    ``data.parquet[train]:row 5``.
    """

    path: str
    line: int | None = None
    column: int | None = None
    unit: str | None = None

    def __str__(self) -> str:
        text = self.path
        if self.line is not None:
            text += f":{self.unit} {self.line}" if self.unit else f":{self.line}"
            if self.column is not None:
                text += f":{self.column}"
        return text


@dataclass(frozen=True)
class Problem:
    """One finding: where, which field, what is wrong; ``severity`` is "error" or "warning"."""

    message: str
    location: Location | None = None
    field: str | None = None
    severity: str = "error"

    def format(self) -> str:
        parts = []
        if self.location is not None:
            parts.append(str(self.location))
        if self.field:
            parts.append(self.field)
        prefix = ": ".join(parts)
        label = "warning: " if self.severity == "warning" else ""
        return f"{prefix}: {label}{self.message}" if prefix else f"{label}{self.message}"


def unreadable_file(exc: OSError, path: str, directory: str) -> Problem:
    """The problem a user's file that cannot be opened gives: not found, a directory (``directory`` says
    what was expected instead), or the system's reason."""
    if isinstance(exc, FileNotFoundError):
        message = "file not found"
    elif isinstance(exc, IsADirectoryError):
        message = directory
    else:
        message = f"cannot read file: {exc.strerror}"
    return Problem(message, Location(path))


class EvsysError(Exception):
    """An error caused by the user's input or environment; the CLI prints it as one line per problem."""

    def __init__(self, problems: list[Problem] | Problem | str) -> None:
        if isinstance(problems, str):
            problems = [Problem(problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(p.format() for p in self.problems))


class ConfigError(EvsysError):
    """The run config is invalid."""


class DataError(EvsysError):
    """A data, task or prediction file is invalid."""


class PluginError(EvsysError):
    """A plugin is missing, broken, or registers a name twice."""


class UnknownNameError(PluginError):
    """A kind (algorithm, backend, verifier, ...) names nothing registered."""
