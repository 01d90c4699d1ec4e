"""Check a lazy ``"module:attr"`` target without importing its module.

The module is looked up with :func:`importlib.util.find_spec` (which imports its parent packages,
never the module itself) and the attribute is looked for among the names the module's source
binds at top level, so ``evsys validate --deep`` finds a mistyped target of a plugin that
imports torch without importing torch.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import sys
from importlib.machinery import ModuleSpec
from pathlib import Path

from evsys.schema.suggest import did_you_mean

__all__ = ["target_problem"]


def target_problem(target: str) -> str | None:
    """Why ``target`` (``"package.module:attr"``) would not load, or None when it looks loadable.

    A module that builds its names at run time (``from x import *``, a module ``__getattr__``)
    or has no Python source is given the benefit of the doubt.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        return f"'{target}' is not 'module:attr'"
    head = attr.split(".")[0]
    loaded = sys.modules.get(module_name)
    if loaded is not None:
        return None if hasattr(loaded, head) else f"module '{module_name}' has no attribute '{head}'{did_you_mean(head, dir(loaded))}"
    try:
        spec = importlib.util.find_spec(module_name)
    except ModuleNotFoundError:
        spec = None
    except Exception as exc:  # a parent package that fails to import is the target's problem
        return f"cannot find module '{module_name}': {type(exc).__name__}: {exc}"
    if spec is None:
        return f"module '{module_name}' not found"
    names = _top_level_names(spec)
    if isinstance(names, str):
        return names
    if names is None or head in names or _is_submodule(spec, module_name, head):
        return None
    return f"module '{module_name}' has no attribute '{head}'{did_you_mean(head, names)}"


def _is_submodule(spec: ModuleSpec, module_name: str, name: str) -> bool:
    if not spec.submodule_search_locations:
        return False
    try:
        return importlib.util.find_spec(f"{module_name}.{name}") is not None
    except Exception:  # an unimportable submodule is not an attribute
        return False


def _top_level_names(spec: ModuleSpec) -> frozenset[str] | str | None:
    """The names the module's source binds at top level; None when they cannot be known statically,
    a message when the source does not parse."""
    origin = spec.origin
    if not origin or not origin.endswith(".py"):
        return None
    try:
        found = _source_names(origin, Path(origin).stat().st_mtime_ns)
    except OSError:
        return None
    return f"module '{spec.name}' does not parse: {found}" if isinstance(found, str) else found


@functools.lru_cache(maxsize=256)
def _source_names(origin: str, mtime_ns: int) -> frozenset[str] | str | None:
    """The top-level names of the source file ``origin`` (cached per modification time), None when
    dynamic or unreadable, or ``"file:line: message"`` when it does not parse."""
    try:
        tree = ast.parse(Path(origin).read_text(encoding="utf-8"), filename=origin)
    except SyntaxError as exc:
        return f"{origin}:{exc.lineno}: {exc.msg}"
    except (OSError, UnicodeDecodeError):
        return None
    names: set[str] = set()
    return frozenset(names) if _collect(tree.body, names) else None


def _collect(body: list[ast.stmt], names: set[str]) -> bool:
    """Add the names ``body`` binds; False when the module is dynamic (star import, ``__getattr__``)."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name == "__getattr__":
                return False
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*":
                    return False
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
            blocks = [getattr(node, part, []) for part in ("body", "orelse", "finalbody")]
            blocks += [handler.body for handler in getattr(node, "handlers", [])]
            if not all(_collect(block, names) for block in blocks):
                return False
    return True
