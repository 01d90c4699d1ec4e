"""The docs: the config reference is generated and fresh, and every page's relative links and anchors resolve."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: every docs page, the README and the changelog
PAGES = [*sorted(str(p.relative_to(ROOT)) for p in DOCS.glob("*.md")), "README.md", "CHANGELOG.md"]
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)


def test_cli_exit_codes_match_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/cli.md's exit-code table says what the commands do with a missing path and a bad config."""
    from evsys.cli.main import main

    table = (DOCS / "cli.md").read_text(encoding="utf-8").split("## Exit codes", 1)[1]
    row = {line.split("|")[1].strip(): line.split("|")[2] for line in table.splitlines() if line.startswith("| ") and "|" in line[2:]}
    assert main(["report", str(tmp_path / "missing")]) == 2 and "a path argument that does not exist" in row["2"]
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 1 and "a missing config" in row["1"]
    capsys.readouterr()


def test_config_reference_is_fresh() -> None:
    from evsys.cli.reference import REGENERATE_COMMAND, render
    from evsys.cli.schema_cmd import builtin_registry

    assert (DOCS / "config-reference.md").read_text(encoding="utf-8") == render(builtin_registry()), f"stale: run {REGENERATE_COMMAND}"


def test_config_reference_covers_every_params_field() -> None:
    from evsys.cli.schema_cmd import builtin_registry

    text = (DOCS / "config-reference.md").read_text(encoding="utf-8")
    registry = builtin_registry()
    for kind in ("algorithm", "backend", "callback"):
        for registration in registry.registrations(kind):
            assert f"### {kind} `{registration.name}`" in text
            for field in (registration.params.model_fields if registration.params else {}):
                assert f"| `{field}` |" in text, (kind, registration.name, field)


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives ``page``'s headings: lower case, punctuation dropped, spaces as hyphens."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in HEADING.findall(text)}


def test_every_docs_page_is_checked() -> None:
    assert {"docs/getting-started.md", "docs/performance.md", "README.md"} <= set(PAGES)


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_resolve(page: str) -> None:
    source = ROOT / page
    text = FENCE.sub("", source.read_text(encoding="utf-8"))  # links inside code blocks are output, not links
    for link in LINK.findall(text):
        if "://" in link or link.startswith("mailto:"):
            continue
        path, _, anchor = link.partition("#")
        target = source if not path else source.parent / path
        assert target.exists(), f"{page}: broken link {link}"
        if anchor and target.suffix == ".md":
            assert anchor in anchors(target), f"{page}: no heading for #{anchor} in {target.relative_to(ROOT)}"
