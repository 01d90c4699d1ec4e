"""``evsys run CONFIG``: train as the config says, printing progress and the final Status / Metrics / Logs."""

from __future__ import annotations

import click

from evsys.cli.api import run
from evsys.logging.console import ConsoleProgress


@click.command("run")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--resume", is_flag=True, help="Continue the run in the run directory from its last complete checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace the outputs of an earlier run of the same name.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines; print only the final result.")
@click.pass_context
def run_command(ctx: click.Context, config: str, resume: bool, overwrite: bool, quiet: bool) -> None:
    """Train with CONFIG and score its benchmarks.

    An existing run directory is an error unless --resume (continue it) or --overwrite (replace it).
    Ctrl-C or SIGTERM stops after the current step with a checkpoint (exit 130 / 143); a second
    Ctrl-C exits at once. See docs/reliability.md.

    \b
    Examples:
      evsys run examples/sdft_walkthrough/config.local.yaml
      evsys run my_run.yaml --resume
      evsys run my_run.yaml --overwrite
    """
    extra = [] if quiet else [ConsoleProgress()]
    result = run(config, callbacks=extra, overwrite=overwrite, resume=resume)
    click.echo(str(result))
    if result.exit_code:
        ctx.exit(result.exit_code)
