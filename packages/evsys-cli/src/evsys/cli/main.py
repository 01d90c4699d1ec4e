"""The ``evsys`` command. Each subcommand lives in its own module; this one wires them up.

Exit codes: 0 success, 1 invalid input or failed run, 2 usage error, 130/143 interrupted.
"""

from __future__ import annotations

import sys
from importlib import metadata

import click

from evsys.cli.errors import report_errors
from evsys.cli.plugins_cmd import plugins_command
from evsys.cli.run_cmd import run_command
from evsys.cli.schema_cmd import schema_command
from evsys.cli.validate_cmd import validate_command


def _version() -> str:
    try:
        return metadata.version("evsys-cli")
    except metadata.PackageNotFoundError:
        return "unknown"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_version(), "--version", prog_name="evsys")
def cli() -> None:
    """EvSys: post-train language models from a YAML config.

    \b
    Examples:
      evsys validate examples/sdft_walkthrough/config.yaml --deep
      evsys run examples/sdft_walkthrough/config.local.yaml
      evsys plugins
    """


cli.add_command(validate_command)
cli.add_command(run_command)
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
