"""``evsys schema [-o FILE]`` / ``evsys schema --all -o DIR``: the JSON Schemas, composed with the installed plugins.

The committed ``schemas/`` directory is ``evsys schema --all -o schemas`` run with only the
built-in packages installed.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import click

from evsys.schema.errors import PluginError, Problem
from evsys.schema.plugins import ENTRY_POINT_GROUP, build_registry, default_registry
from evsys.schema.registry import PluginRegistry
from evsys.schema.schema_export import config_schema, dump_schema, write_schemas

REGENERATE_COMMAND = "evsys schema --all -o schemas"


@click.command("schema")
@click.option(
    "-o",
    "--output",
    type=click.Path(),
    default=None,
    help="Write to this file (with --all: this directory) instead of stdout.",
)
@click.option(
    "--all", "all_schemas", is_flag=True, help="Write every published schema (run config, rows) into the -o directory."
)
def schema_command(output: str | None, all_schemas: bool) -> None:
    """Print the run config's JSON Schema (draft-07) with every installed plugin's params composed in.

    Editors use it through a first line such as
    `# yaml-language-server: $schema=schemas/run_config.schema.json`.

    \b
    Examples:
      evsys schema > run_config.schema.json
      evsys schema -o my.schema.json
      evsys schema --all -o schemas      # regenerate the committed schemas/
    """
    registry = default_registry()
    if all_schemas:
        if output is None:
            raise click.UsageError("--all writes several files: give a directory with -o DIR")
        directory = Path(output)
        if directory.exists() and not directory.is_dir():
            raise click.UsageError(f"-o {output}: not a directory")
        for path in write_schemas(registry, directory):
            click.echo(f"wrote {path.as_posix()}")
        return
    text = dump_schema(config_schema(registry))
    if output is None:
        click.echo(text, nl=False)
        return
    target = Path(output)
    if target.parent != Path() and not target.parent.is_dir():
        raise click.UsageError(f"-o {output}: directory {target.parent} does not exist")
    target.write_text(text, encoding="utf-8")
    click.echo(f"wrote {target.as_posix()}", err=True)


#: the distributions whose plugins make up the committed schemas/
BUILTIN_DISTRIBUTIONS = ("evsys-algorithms", "evsys-backends", "evsys-data", "evsys-logging", "evsys-verifiers")


def builtin_registry() -> PluginRegistry:
    """A registry of the built-in plugins only (their entry points), whatever else is installed.

    A built-in that fails to load raises :class:`~evsys.schema.errors.PluginError`: the committed
    schemas must not silently lose a part.
    """
    plugins = []
    problems = []
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(entry_point, "dist", None)
        if dist is None or dist.name not in BUILTIN_DISTRIBUTIONS:
            continue
        try:
            plugins.append((dist.name, entry_point.load()))
        except Exception as exc:  # reported below, as one line per broken built-in
            problems.append(Problem(f"built-in plugin {dist.name} failed to load: {type(exc).__name__}: {exc}"))
    if problems:
        raise PluginError(problems)
    return build_registry(plugins=plugins, autoload=False)
