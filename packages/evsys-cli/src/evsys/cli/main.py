"""The ``evsys`` command. Each subcommand lives in its own module; this one wires them up.

Exit codes (docs/cli.md): 0 success, 1 invalid input or failed run, 2 usage error,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import logging
import os
import sys
from importlib import metadata

import click

from evsys.cli.errors import report_errors
from evsys.cli.eval_cmd import eval_command
from evsys.cli.export_cmd import export_command
from evsys.cli.init_cmd import init_command
from evsys.cli.plugins_cmd import plugins_command
from evsys.cli.report_cmd import report_command
from evsys.cli.run_cmd import run_command
from evsys.cli.schema_cmd import schema_command
from evsys.cli.validate_cmd import validate_command

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_LEVEL_ENV = "EVSYS_LOG_LEVEL"


def _version() -> str:
    try:
        return metadata.version("evsys-cli")
    except metadata.PackageNotFoundError:
        return "unknown"


def configure_logging(level: str) -> None:
    """Send Python ``logging`` records at ``level`` and above to stderr as ``LEVEL name: message``."""
    root = logging.getLogger()
    numeric = getattr(logging, level.upper())
    if not any(getattr(handler, "_evsys", False) for handler in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler._evsys = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(numeric)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(_version(), "--version", "-V", prog_name="evsys")
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default=lambda: os.environ.get(LOG_LEVEL_ENV, "warning").lower(),
    show_default="warning, or $EVSYS_LOG_LEVEL",
    help="Python logging records shown on stderr (EvSys's and its libraries').",
)
def cli(log_level: str) -> None:
    """EvSys: post-train language models from a YAML config.

    \b
    Examples:
      evsys init my_project && cd my_project && evsys run config.yaml
      evsys validate examples/sdft_walkthrough/config.yaml --deep
      evsys run examples/sdft_walkthrough/config.local.yaml
      evsys eval examples/sdft_walkthrough/config.local.yaml --checkpoint examples/sdft_walkthrough/outputs/sdft_capitals
      evsys report examples/sdft_walkthrough/outputs/sdft_capitals
      evsys export examples/sdft_walkthrough/outputs/sdft_capitals --merge -o outputs/merged-model
      evsys plugins

    \b
    Exit codes: 0 ok, 1 invalid input or failed run, 2 usage error, 130 interrupted, 143 terminated.
    Shell completion (bash): eval "$(_EVSYS_COMPLETE=bash_source evsys)"   (zsh_source, fish_source)
    Docs: docs/cli.md
    """
    configure_logging(log_level)


cli.add_command(init_command)
cli.add_command(validate_command)
cli.add_command(run_command)
cli.add_command(eval_command)
cli.add_command(report_command)
cli.add_command(export_command)
cli.add_command(plugins_command)
cli.add_command(schema_command)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the CLI and turn user errors into one-line messages."""
    with report_errors() as outcome:
        code = cli.main(args=argv, prog_name="evsys", standalone_mode=False)
        outcome.code = code if isinstance(code, int) else 0
    return outcome.code


if __name__ == "__main__":
    sys.exit(main())
