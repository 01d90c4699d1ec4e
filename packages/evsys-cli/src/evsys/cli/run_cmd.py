"""``evsys run CONFIG``: train as the config says, printing progress and the final Status / Metrics / Logs."""

from __future__ import annotations

import click

from evsys.cli.api import run
from evsys.logging.console import ConsoleProgress


@click.command("run")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--overwrite", is_flag=True, help="Replace the outputs of an earlier run of the same name.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines; print only the final result.")
def run_command(config: str, overwrite: bool, quiet: bool) -> None:
    """Train with CONFIG and score its benchmarks.

    \b
    Examples:
      evsys run examples/sdft_walkthrough/config.local.yaml
      evsys run my_run.yaml --overwrite
    """
    extra = [] if quiet else [ConsoleProgress()]
    result = run(config, callbacks=extra, overwrite=overwrite)
    click.echo(str(result))
