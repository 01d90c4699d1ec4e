"""``evsys report RUN_DIR [RUN_DIR...]``: final and best metrics, and PNG plots of every metric over steps."""

from __future__ import annotations

import click

from evsys.cli.report import format_table, write_report


@click.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, exists=True))
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False),
    default=None,
    help="Where report.md and plots/ go. Default: the run directory (one run), or report/ in the runs' common parent (several).",
)
@click.option("--all-metrics", is_flag=True, help="Put every metric in the table, not only benchmark metrics and train/mean_loss.")
@click.option("--no-plots", is_flag=True, help="Write the table only (no matplotlib).")
def report_command(run_dirs: tuple[str, ...], output: str | None, all_metrics: bool, no_plots: bool) -> None:
    """Summarize one or more runs: a table of final and best metrics, and a plot per metric.

    Reads each RUN_DIR's metrics.jsonl (a run, or an `evsys eval` directory), prints the table,
    writes report.md and plots/<metric>.png (several runs share each plot), and adds a link to
    the report at the end of each run's summary.md.

    \b
    Examples:
      evsys report examples/sdft_walkthrough/outputs/sdft_capitals
      evsys report outputs/lr_1e-4 outputs/lr_3e-4 -o outputs/lr_sweep
    """
    report = write_report(list(run_dirs), output, plots=not no_plots, all_metrics=all_metrics)
    for line in format_table(report.rows):
        click.echo(line)
    drawn = f"{len(report.plots)} plot{'s' if len(report.plots) != 1 else ''}"
    if report.constant:
        drawn += f"; {len(report.constant)} constant metric{'s' if len(report.constant) != 1 else ''} listed, not drawn"
    click.echo(f"\nReport:    {report.markdown} ({drawn})")
