"""``evsys export RUN_DIR [--merge] -o DIR``: the trained adapter as a peft directory, or merged into a full model."""

from __future__ import annotations

import click

from evsys.engine.checkpoints import find_checkpoint
from evsys.engine.export import export_adapter, merge_adapter


@click.command("export")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="The directory to write.")
@click.option("--merge", is_flag=True, help="Merge the adapter into the base model: a plain transformers model directory.")
@click.option("--checkpoint", "-c", "name", default=None, help="Which checkpoint of RUN_DIR (a name under checkpoints/). Default: final, else the latest step.")
@click.option("--base", default=None, metavar="MODEL", help="Base model to merge into / record in the adapter (default: the one the adapter names).")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty output directory.")
def export_command(run_dir: str, output: str, merge: bool, name: str | None, base: str | None, overwrite: bool) -> None:
    """Export the LoRA adapter a local-backend run trained.

    Without --merge, DIR is a peft adapter directory (PeftModel.from_pretrained(base, DIR)).
    With --merge, DIR is a full model: AutoModelForCausalLM.from_pretrained(DIR) and
    AutoTokenizer.from_pretrained(DIR) load it with no peft and no EvSys.
    RUN_DIR may also be a checkpoint directory itself.

    \b
    Examples:
      evsys export examples/sdft_walkthrough/outputs/sdft_capitals -o outputs/sdft-adapter
      evsys export examples/sdft_walkthrough/outputs/sdft_capitals --merge -o outputs/sdft-merged
      evsys export outputs/my_run -c step_000100 --merge -o outputs/my-model-step100
    """
    checkpoint = find_checkpoint(run_dir, name)
    if merge:
        target = merge_adapter(checkpoint, output, base=base, overwrite=overwrite)
        click.echo(f"Merged {checkpoint} into a transformers model: {target}")
    else:
        target = export_adapter(checkpoint, output, base=base, overwrite=overwrite)
        click.echo(f"Exported the adapter of {checkpoint}: {target}")
