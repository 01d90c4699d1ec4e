"""``evsys init DIR``: a new project that validates and runs as written, from inside DIR.

It writes ``config.yaml`` (paths relative to DIR, outputs in ``DIR/outputs/``), a few training rows
in ``data/train.jsonl``, a benchmark in ``data/val/tasks.jsonl``, ``run_config.schema.json`` (the
run config's JSON Schema composed with the plugins installed now, so the config's
``# yaml-language-server: $schema=run_config.schema.json`` line resolves from DIR, offline) and a
``.gitignore`` for ``outputs/``. Existing files are never replaced.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from evsys.schema.errors import ConfigError, Location, Problem
from evsys.schema.plugins import default_registry
from evsys.schema.schema_export import config_schema, dump_schema

SCHEMA_FILE = "run_config.schema.json"
ALGORITHMS = ("sdft", "sft", "grpo")
BACKENDS = ("local", "tinker")
#: the base model each backend starts from
MODELS = {"local": "smollm2-135m-instruct", "tinker": "Qwen/Qwen3.5-4B"}
BACKEND_NOTES = {
    "local": "this machine (CPU, or CUDA when present); smollm2-135m-instruct is the bundled model, no download",
    "tinker": "the Tinker service: export TINKER_API_KEY=... first",
}

CAPITALS = (
    ("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Canada", "Ottawa"),
    ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Norway", "Oslo"),
)
BENCHMARK = (("Germany", "Berlin"), ("Spain", "Madrid"), ("Greece", "Athens"), ("Chile", "Santiago"))
SUFFIX = " Answer with just the city name."

#: each algorithm's params block (YAML, indented under ``params:``) and what one training row is
ALGORITHM_PARAMS = {
    "sdft": """\
    learning_rate: 1.0e-4
    max_steps: 2            # bump to 100-500 for a real run
    batch_size: 1
    lora_rank: 1
    topk: 20                # how many teacher tokens are distilled per step
    user_template: "{question}"
""",
    "sft": """\
    learning_rate: 1.0e-4
    max_steps: 2            # bump to 100-500 (or set epochs: 3) for a real run
    batch_size: 1
    lora_rank: 1
""",
    "grpo": """\
    learning_rate: 1.0e-4
    max_steps: 2            # bump to 100-500 for a real run
    batch_size: 2           # prompts per step
    lora_rank: 1
    group_size: 4           # samples per prompt; rewards are compared within the group
    max_new_tokens: 32
    temperature: 1.0
    user_template: "{question} Answer with just the city name."
    reward_fn: contains     # the verifier that scores each sample against `expected`
    reward_options: { ignore_case: true }
""",
}
DATA_NOTES = {
    "sdft": "prompts with the gold answer the teacher sees: {inputs: {question}, expected}",
    "sft": "chat rows: the assistant turns are trained on",
    "grpo": "prompts with the answer the reward checks: {inputs: {question}, expected}",
}


def train_rows(algorithm: str) -> list[dict[str, object]]:
    """The starter training rows for ``algorithm`` (capital cities)."""
    if algorithm == "sft":
        return [
            {
                "messages": [
                    {"role": "user", "content": f"What is the capital of {country}?"},
                    {"role": "assistant", "content": f"The capital of {country} is {city}."},
                ]
            }
            for country, city in CAPITALS
        ]
    return [{"inputs": {"question": f"What is the capital of {country}?"}, "expected": city} for country, city in CAPITALS]


def benchmark_tasks() -> list[dict[str, object]]:
    """The starter benchmark: verifier-scored tasks (see docs/verifiers.md)."""
    return [
        {
            "task_id": f"val_{index}",
            "instruction": f"What is the capital of {country}?{SUFFIX}",
            "verifier": {"kind": "in_process", "fn_name": "contains", "expected": city},
        }
        for index, (country, city) in enumerate(BENCHMARK)
    ]


def config_text(name: str, algorithm: str, backend: str) -> str:
    """The project's ``config.yaml``: every path relative to the project directory."""
    return (
        f"# yaml-language-server: $schema={SCHEMA_FILE}\n"
        f"# Written by `evsys init`: {algorithm} on {BACKEND_NOTES[backend]}.\n"
        "# Run from this directory: evsys validate config.yaml --deep && evsys run config.yaml\n"
        f"name: {name}\n"
        "output_dir: outputs\n"
        "\n"
        f"model:   {{ name: {MODELS[backend]} }}\n"
        f"backend: {{ kind: {backend} }}\n"
        "algorithm:\n"
        f"  kind: {algorithm}\n"
        "  params:\n"
        f"{ALGORITHM_PARAMS[algorithm]}"
        "\n"
        "data:\n"
        "  source_kind: jsonl\n"
        f"  path: data/train.jsonl   # {DATA_NOTES[algorithm]}\n"
        "\n"
        "metadata:\n"
        "  benchmark:\n"
        "    - name: val\n"
        "      path: data/val        # directory holding tasks.jsonl\n"
        "      run_every: 1\n"
        "      metrics: [pass@1]\n"
        "      split: val\n"
        "\n"
        "callbacks:\n"
        "  - kind: local_logger\n"
    )


def _jsonl(rows: list[dict[str, object]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def project_files(directory: Path, algorithm: str, backend: str) -> dict[Path, str]:
    """Every file ``evsys init`` writes, path -> text."""
    name = "".join(c if c.isalnum() or c in "_.-" else "_" for c in directory.resolve().name).lstrip("_.-") or "my_run"
    return {
        directory / "config.yaml": config_text(f"{name}_{algorithm}", algorithm, backend),
        directory / "data" / "train.jsonl": _jsonl(train_rows(algorithm)),
        directory / "data" / "val" / "tasks.jsonl": _jsonl(benchmark_tasks()),
        directory / SCHEMA_FILE: dump_schema(config_schema(default_registry())),
        directory / ".gitignore": "outputs/\n",
    }


def init_project(directory: Path, algorithm: str = "sdft", backend: str = "local") -> list[Path]:
    """Write a new project into ``directory``; refuses (one line per file) to replace anything."""
    files = project_files(directory, algorithm, backend)
    existing = [path for path in files if path.exists()]
    if existing:
        raise ConfigError([Problem("already exists; evsys init never replaces a file (choose a new directory)", Location(str(p))) for p in existing])
    for path, text in files.items():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(Problem(f"cannot write: {exc.strerror or exc}", Location(str(path)))) from None
    return list(files)


@click.command("init")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--algorithm", "-a", type=click.Choice(ALGORITHMS), default="sdft", show_default=True, help="The post-training algorithm.")
@click.option("--backend", "-b", type=click.Choice(BACKENDS), default="local", show_default=True, help="Where training runs.")
def init_command(directory: str, algorithm: str, backend: str) -> None:
    """Write a new project into DIRECTORY: config, a few data rows, a benchmark, the JSON Schema.

    It validates and runs as written from inside DIRECTORY; edit the data and the config from there.

    \b
    Examples:
      evsys init my_project                              # sdft on this machine, the bundled model
      evsys init my_grpo --algorithm grpo
      evsys init my_sft --algorithm sft --backend tinker
    """
    root = Path(directory)
    written = init_project(root, algorithm, backend)
    click.echo(f"Created {algorithm} project ({backend} backend) in {root}:")
    for path in written:
        click.echo(f"  {path.relative_to(root).as_posix()}")
    click.echo("Next:")
    click.echo(f"  cd {root}")
    if backend == "tinker":
        click.echo("  export TINKER_API_KEY=...")
    click.echo("  evsys validate config.yaml --deep")
    click.echo("  evsys run config.yaml")
