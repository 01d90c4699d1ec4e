"""``evsys plugins [--json]``: every registered name by kind, its package and version, and the broken plugins."""

from __future__ import annotations

import json
from typing import Any

import click

from evsys.schema.plugins import default_registry
from evsys.schema.registry import KINDS, PluginRegistry

_HEADERS = ("KIND", "NAME", "PACKAGE", "VERSION", "DESCRIPTION")


def plugins_report(registry: PluginRegistry) -> dict[str, Any]:
    """The machine-readable listing: ``{"plugins": [...], "broken": [...]}``."""
    plugins = [
        {
            "kind": r.kind,
            "name": r.name,
            "distribution": r.distribution,
            "version": r.version,
            "description": r.description,
            "target": r.target,
        }
        for kind in KINDS
        for r in registry.registrations(kind)
    ]
    broken = [
        {"name": b.name, "distribution": b.distribution, "version": b.version, "error": b.error}
        for b in registry.broken
    ]
    return {"plugins": plugins, "broken": broken}


def _table(rows: list[tuple[str, ...]], headers: tuple[str, ...]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    lines = []
    for row in (headers, *rows):
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join(cells).rstrip())
    return lines


def render_plugins(registry: PluginRegistry) -> str:
    """The listing as a table, then the broken plugins (if any)."""
    report = plugins_report(registry)
    rows = [(p["kind"], p["name"], p["distribution"], p["version"] or "-", p["description"]) for p in report["plugins"]]
    lines = _table(rows, _HEADERS) if rows else ["No plugins registered."]
    if report["broken"]:
        lines.append("")
        lines.append(f"Broken plugins ({len(report['broken'])}): their names are not registered")
        broken_rows = [(b["name"], b["distribution"], b["version"] or "-", b["error"]) for b in report["broken"]]
        lines.extend(_table(broken_rows, ("NAME", "PACKAGE", "VERSION", "ERROR")))
    return "\n".join(lines)


@click.command("plugins")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print JSON: {plugins: [{kind, name, distribution, version, description, target}], broken: [...]}.",
)
def plugins_command(as_json: bool) -> None:
    """List every registered algorithm, backend, verifier, transform, callback, source and metric.

    Each name is shown with the package (distribution) that registers it, its version and
    description; plugins that failed to load are listed after, with their error. Set
    EVSYS_DISABLE_PLUGIN_AUTOLOAD=1 to load no entry points.

    \b
    Examples:
      evsys plugins
      evsys plugins --json
    """
    registry = default_registry()
    if as_json:
        click.echo(json.dumps(plugins_report(registry), indent=2))
    else:
        click.echo(render_plugins(registry))
