"""The docs: the config reference is generated and fresh, every page's relative links and anchors resolve, and every documented command line is a real command."""

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


#: ``$ command`` lines in console blocks, every line of a bash/sh block, and inline code spans that start with a command
PROGRAMS = ("evsys", "evsys-verify")
FENCED = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`([^`\n]+)`")
#: inline spans that name the program in passing, not a command line to run
NOT_COMMANDS = {"evsys <model>"}  # backends-tinker.md: the Tinker session's default display name


def documented_commands(page: str) -> list[str]:
    """Every ``evsys ...`` / ``evsys-verify ...`` command line of a page (commands in pipes and chains included)."""
    text = (ROOT / page).read_text(encoding="utf-8")
    lines: list[str] = []
    for language, body in FENCED.findall(text):
        for line in body.splitlines():
            line = line.strip()
            if line.startswith("$ "):
                lines.append(line[2:])
            elif language in ("bash", "sh", "shell"):
                lines.append(line)
    lines += [span for span in INLINE.findall(FENCED.sub("", text)) if span not in NOT_COMMANDS]
    commands = []
    for line in lines:
        for part in re.split(r"\s(?:\|\||&&|;|\|)\s", line.split(" # ")[0].split("  #")[0]):
            words = re.split(r"\s(?:\d?>>?|<)\s", part)[0].split()  # a redirection ends the command
            while words and re.match(r"^[A-Z_]+=", words[0]):  # VAR=value before the command
                words.pop(0)
            if len(words) > 1 and words[0] in PROGRAMS:
                commands.append(" ".join(words))
    return commands


def _is_placeholder(word: str) -> bool:
    return word in ("...", "|") or word.isupper() or word.startswith("<") or re.fullmatch(r"[A-Z_]+(\.\.\.)?", word) is not None


def command_problem(line: str) -> str | None:
    """Why ``line`` is not a command the click tree accepts (an unknown command, option or choice, too many
    arguments), or None. Resolved against the commands' declared parameters; nothing runs."""
    import click

    from evsys.cli.main import cli
    from evsys.verifiers.cli import command as verify_cli

    synopsis = "[" in line  # "evsys validate CONFIG [--deep] [--set KEY=VALUE]"
    words = [w.strip("[]") for w in line.replace("\\|", "|").split()]
    words = [w for w in words if w and not (synopsis and w == "|")]
    program, words = words[0], words[1:]
    command: click.Command = cli if program == "evsys" else verify_cli
    name = program
    positional: list[str] = []
    while words:
        word = words.pop(0)
        if word.startswith("-") and word != "-":
            flag, has_value, value = word.partition("=")
            params = command.get_params(click.Context(command))  # with --help / -h
            option = next((p for p in params if isinstance(p, click.Option) and flag in (*p.opts, *p.secondary_opts)), None)
            if option is None:
                return f"{name}: no option {flag}"
            if not (option.is_flag or option.count):
                if not has_value:
                    if not words:
                        return f"{name}: {flag} needs a value"
                    value = words.pop(0)
                choices = getattr(option.type, "choices", None)
                if choices and not _is_placeholder(value) and "|" not in value and value not in choices:
                    return f"{name}: {flag} {value} is not one of {', '.join(choices)}"
            continue
        if isinstance(command, click.Group):
            sub = command.commands.get(word)
            if sub is None:
                return f"{name}: no command {word} (commands: {', '.join(sorted(command.commands))})"
            command, name = sub, f"{name} {word}"
            continue
        if word != "...":
            positional.append(word)
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    if not any(a.nargs == -1 for a in arguments) and len(positional) > sum(a.nargs for a in arguments):
        return f"{name}: {len(positional)} arguments given, it takes {sum(a.nargs for a in arguments)}"
    return None


@pytest.mark.parametrize("page", [p for p in PAGES if p != "CHANGELOG.md"])
def test_documented_commands_are_real(page: str) -> None:
    """Every documented command line names a real command and real options, resolved against the click tree."""
    problems = [f"{page}: `{line}`: {problem}" for line in documented_commands(page) if (problem := command_problem(line))]
    assert problems == []


def test_the_command_check_catches_what_it_should() -> None:
    assert command_problem("evsys validate c.yaml --deep --set a=1") is None
    assert command_problem("evsys --log-level debug run CONFIG ...") is None
    assert command_problem("evsys init DIR [--algorithm sdft|sft|grpo] [--backend local|tinker]") is None
    assert command_problem("evsys validate c.yaml --deeep") == "evsys validate: no option --deeep"
    assert command_problem("evsys valdate c.yaml") is not None and "no command valdate" in str(command_problem("evsys valdate c.yaml"))
    assert command_problem("evsys --log-level loud run c.yaml") == "evsys: --log-level loud is not one of debug, info, warning, error"
    assert command_problem("evsys validate a.yaml b.yaml") == "evsys validate: 2 arguments given, it takes 1"
    assert command_problem("evsys-verify tasks.jsonl preds.jsonl --metric pass@1") == "evsys-verify: no option --metric"
    assert documented_commands("docs/cli.md")  # the extraction finds commands at all


def test_documented_backend_line_is_what_a_run_prints() -> None:
    """The ``backend: ...`` line the docs show for an AVX-512 VNNI CPU is the one the local backend logs there."""
    import torch

    from evsys.backends.local import auto_settings
    from evsys.backends.local.cpu_features import CpuFeatures, fbgemm_in_build

    if not fbgemm_in_build():
        pytest.skip("this torch has no fbgemm int8 kernels: auto resolves to model here")
    vnni = CpuFeatures(avx2=True, avx512=True, vnni=True)
    weights = auto_settings.resolve_rollout_weights(
        "auto", device=torch.device("cpu"), engine="auto", features=vnni, unsupported=None
    )
    expected = auto_settings.describe(weights, auto_settings.resolve_checkpointing("auto", weights.value, 30))
    shown = [
        line.split("] ", 1)[1]
        for page in ("docs/performance.md", "docs/cli.md")
        for line in (ROOT / page).read_text(encoding="utf-8").splitlines()
        if "] backend: rollout_weights" in line
    ]
    assert len(shown) >= 2 and set(shown) == {expected}
