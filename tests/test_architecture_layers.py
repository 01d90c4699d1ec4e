"""The layers of docs/architecture.md hold: schema <- data / verifiers / logging / backends <- algorithms <- engine <- cli.

A static scan of every module's imports (function-level ones included) and a subprocess that imports
the light packages and looks at ``sys.modules``.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGES = Path(__file__).resolve().parents[1] / "packages"
#: import package -> (distribution, layer); a package may import only lower layers (or, in its own
#: layer, a distribution it declares as a dependency, or one it uses only where installed:
#: ``try: import ... except ImportError``)
LAYERS = {
    "schema": ("evsys-schema", 0),
    "testing": ("evsys-schema", 0),
    "data": ("evsys-data", 1),
    "verifiers": ("evsys-verifiers", 1),
    "logging": ("evsys-logging", 1),
    "backends": ("evsys-backends", 1),
    "algorithms": ("evsys-algorithms", 2),
    "engine": ("evsys-cli", 3),
    "cli": ("evsys-cli", 4),
}
LIGHT = ("schema", "testing", "data", "verifiers", "logging", "algorithms")
HEAVY = frozenset({"torch", "transformers", "peft"})


def _modules(package: str) -> list[Path]:
    distribution = LAYERS[package][0]
    return sorted((PACKAGES / distribution / "src" / "evsys" / package).rglob("*.py"))


def _optional_lines(tree: ast.AST) -> set[int]:
    """Lines of imports inside ``try: ... except ImportError`` (an optional peer, used where installed)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            isinstance(handler.type, ast.Name) and handler.type.id in ("ImportError", "ModuleNotFoundError") for handler in node.handlers
        ):
            lines.update(child.lineno for statement in node.body for child in ast.walk(statement) if isinstance(child, (ast.Import, ast.ImportFrom)))
    return lines


def _imports(path: Path, *, optional: bool = True) -> list[tuple[int, str]]:
    """``(line, module)`` of every absolute import; ``optional=False`` leaves out the guarded ones."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skip = set() if optional else _optional_lines(tree)
    found = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def _declared(distribution: str) -> set[str]:
    text = (PACKAGES / distribution / "pyproject.toml").read_text(encoding="utf-8")
    block = re.search(r"^dependencies = \[(.*?)\]", text, re.M | re.S)
    return set(re.findall(r'"(evsys-[a-z]+)', block.group(1))) if block else set()


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_no_package_imports_a_layer_above_it(package: str) -> None:
    distribution, layer = LAYERS[package]
    declared = _declared(distribution) | {distribution}
    wrong = []
    for path in _modules(package):
        for line, module in _imports(path, optional=False):
            parts = module.split(".")
            if parts[0] != "evsys" or len(parts) < 2 or parts[1] == package:
                continue
            other_distribution, other_layer = LAYERS[parts[1]]
            if other_layer > layer or (other_layer == layer and other_distribution not in declared):
                wrong.append(f"{path.relative_to(PACKAGES)}:{line}: imports {module}")
    assert not wrong, "\n".join(wrong)


def test_the_engine_knows_no_backend_or_algorithm_by_name() -> None:
    named = [
        f"{path.relative_to(PACKAGES)}:{line}: {module}"
        for path in _modules("engine")
        for line, module in _imports(path)
        if module.startswith(("evsys.backends", "evsys.algorithms"))
    ]
    assert not named, "\n".join(named)


@pytest.mark.parametrize("package", LIGHT)
def test_light_packages_import_no_torch_statically(package: str) -> None:
    heavy = [
        f"{path.relative_to(PACKAGES)}:{line}: {module}"
        for path in _modules(package)
        for line, module in _imports(path)
        if module.split(".")[0] in HEAVY
    ]
    assert not heavy, "\n".join(heavy)


def test_light_packages_import_no_torch_when_loaded() -> None:
    modules = []
    for package in LIGHT:
        root = PACKAGES / LAYERS[package][0] / "src"
        for path in _modules(package):
            name = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
            if not name.endswith(("_tracker", "__main__")):  # the trackers import their optional libraries
                modules.append(name)
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]", f"{len(modules)} modules imported: {result.stdout}"
