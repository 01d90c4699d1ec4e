"""``target_problem``: a ``module:attr`` target checked from the module's source, never imported."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from evsys.schema.targets import target_problem

MODULE = '''\
raise RuntimeError("imported")
import os.path as paths
from json import loads as parse

try:
    import fast_thing
except ImportError:
    fast_thing = None

if paths:
    def conditional():
        pass

class Trainer:
    pass

VALUE: int = 1
'''


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "evsys_target_mod.py").write_text(MODULE, encoding="utf-8")
    package = tmp_path / "evsys_target_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "sub.py").write_text("raise RuntimeError('imported')\n", encoding="utf-8")
    (tmp_path / "evsys_target_star.py").write_text("from os.path import *\n", encoding="utf-8")
    (tmp_path / "evsys_target_bad.py").write_text("def (:\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("evsys_target_")]:
        del sys.modules[name]


@pytest.mark.parametrize("attr", ["Trainer", "Trainer.method", "paths", "parse", "fast_thing", "conditional", "VALUE"])
def test_names_bound_at_top_level_are_found(site: Path, attr: str) -> None:
    assert target_problem(f"evsys_target_mod:{attr}") is None
    assert "evsys_target_mod" not in sys.modules


def test_what_would_not_load_is_one_line(site: Path) -> None:
    assert target_problem("evsys_target_mod:Trainr") == "module 'evsys_target_mod' has no attribute 'Trainr' (did you mean 'Trainer'?)"
    assert target_problem("evsys_target_missing:X") == "module 'evsys_target_missing' not found"
    assert target_problem("evsys_target_pkg.nope:X") == "module 'evsys_target_pkg.nope' not found"
    assert target_problem("evsys_target_mod") == "'evsys_target_mod' is not 'module:attr'"
    problem = target_problem("evsys_target_bad:f")
    assert problem is not None and problem.startswith("module 'evsys_target_bad' does not parse: ") and problem.endswith(":1: invalid syntax")
    assert not [m for m in sys.modules if m.startswith(("evsys_target_mod", "evsys_target_bad"))]


def test_a_submodule_and_a_star_import_get_the_benefit_of_the_doubt(site: Path) -> None:
    assert target_problem("evsys_target_pkg:sub") is None
    assert target_problem("evsys_target_star:anything") is None
    assert "evsys_target_pkg.sub" not in sys.modules
