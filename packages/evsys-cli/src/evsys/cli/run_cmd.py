"""``evsys run CONFIG``: train as the config says, printing progress and the final Status / Metrics / Logs."""

from __future__ import annotations

import click

from evsys.cli.options import console_progress, echo_outcome, override_options
from evsys.engine.api import run
from evsys.engine.overrides import Override


@click.command("run")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--resume", is_flag=True, help="Continue the run in the run directory from its last complete checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace the outputs of an earlier run of the same name.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines; print only the final result.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Run against a strict simulation of the Tinker service: offline, no key, nothing billed; "
    "outputs go to <output_dir>/<name>-dry-run (replaced each time). Refused for the local backend.",
)
@override_options
@click.pass_context
def run_command(
    ctx: click.Context, config: str, resume: bool, overwrite: bool, quiet: bool, dry_run: bool, overrides: list[Override]
) -> None:
    """Train with CONFIG and score its benchmarks.

    An existing run directory is an error unless --resume (continue it) or --overwrite (replace it);
    one a live evsys process holds is refused. --set KEY=VALUE changes a config key for this run
    (checked like the file; recorded in resolved_config.json).
    Ctrl-C or SIGTERM stops after the current step with a checkpoint (exit 130 / 143); a second
    Ctrl-C exits at once. See docs/reliability.md.

    \b
    Examples:
      evsys run examples/sdft_walkthrough/config.local.yaml
      evsys run my_run.yaml --resume
      evsys run my_run.yaml --overwrite
      evsys run examples/sdft_walkthrough/config.yaml --dry-run
      evsys run my_run.yaml --set algorithm.params.max_steps=10 --name my_run_10
    """
    with console_progress(not quiet) as extra:
        result = run(config, callbacks=extra, overwrite=overwrite, resume=resume, overrides=overrides, dry_run=dry_run)
    echo_outcome(result, result.run_dir, dry_run=dry_run)
    if result.exit_code:
        ctx.exit(result.exit_code)
