"""``evsys eval CONFIG [--checkpoint PATH]``: score the config's benchmarks on the base model or a checkpoint."""

from __future__ import annotations

import click

from evsys.cli.options import console_progress, echo_outcome, override_options
from evsys.engine.evaluation import evaluate_config
from evsys.engine.overrides import Override


@click.command("eval")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option(
    "--checkpoint",
    "-c",
    default=None,
    metavar="PATH",
    help="A run directory (its checkpoints/final, else the latest step), a checkpoint directory, or a backend URI. Default: the base model.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False),
    default=None,
    help="Write metrics.jsonl, predictions/ and summary.md here. Default: <output_dir>/<name>/eval/<base|checkpoint name>/.",
)
@click.option("--step", type=click.IntRange(min=0), default=None, help="Record the rows at this step (default: 0 for the base model, N for step_N, max_steps for final).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier evaluation in the same directory.")
@click.option("--quiet", "-q", is_flag=True, help="No progress; print only the final result.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Score against a strict simulation of the Tinker service: offline, no key, nothing billed. Refused for the local backend.",
)
@override_options
def eval_command(
    config: str, checkpoint: str | None, output: str | None, step: int | None, overwrite: bool, quiet: bool, dry_run: bool,
    overrides: list[Override],
) -> None:
    """Score CONFIG's benchmarks (metadata.benchmark) without training.

    Uses the same scoring as in-loop evaluation and writes the same files: metrics.jsonl rows
    (split and '<split>/<benchmark>/<metric>' keys as in a run), predictions/<benchmark>.jsonl and
    summary.md.

    \b
    Examples:
      evsys eval examples/sdft_walkthrough/config.local.yaml                    # the base model
      evsys eval examples/sdft_walkthrough/config.local.yaml \\
          --checkpoint examples/sdft_walkthrough/outputs/sdft_capitals         # after training
      evsys eval my_run.yaml -c outputs/my_run/checkpoints/step_000100 -o evals/step100
    """
    with console_progress(not quiet) as extra:
        result = evaluate_config(
            config, checkpoint=checkpoint, output=output, step=step, callbacks=extra, overwrite=overwrite, overrides=overrides,
            dry_run=dry_run,
        )
    echo_outcome(result, result.logs, dry_run=dry_run)
