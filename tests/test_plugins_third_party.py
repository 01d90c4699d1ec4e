"""A third-party plugin package, discovered through its entry point as pip would install it.

``tests/plugin_fixture`` is a real package (pyproject.toml with ``[project.entry-points.evsys]``).
Installing it with pip would build a wheel and write ``<name>-<version>.dist-info`` with METADATA
and entry_points.txt into site-packages; :func:`install_dist` writes that same dist-info (from the
fixture's own pyproject.toml) into a temporary directory put on ``sys.path``, so
``importlib.metadata`` finds it exactly as it finds an installed package, in milliseconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from evsys.schema.errors import UnknownNameError
from evsys.schema.plugins import DISABLE_AUTOLOAD_ENV, build_registry, reset_default_registry

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

FIXTURE = Path(__file__).parent / "plugin_fixture"
ROOT = Path(__file__).resolve().parents[1]


def install_dist(site: Path, name: str, version: str, entry_points: dict[str, str]) -> Path:
    """Write ``<name>-<version>.dist-info`` (METADATA, entry_points.txt, RECORD) into ``site``."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")
    lines = ["[evsys]", *(f"{key} = {value}" for key, value in entry_points.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (info / "RECORD").write_text("", encoding="utf-8")
    return info


def install_fixture(site: Path) -> None:
    """Install tests/plugin_fixture into ``site`` from its pyproject.toml (metadata + a .pth-like path entry)."""
    project = tomllib.loads((FIXTURE / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    install_dist(site, project["name"], project["version"], project["entry-points"]["evsys"])


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A site directory on sys.path holding the fixture plugin; the process registry is rebuilt around the test."""
    directory = tmp_path / "site"
    directory.mkdir()
    install_fixture(directory)
    monkeypatch.syspath_prepend(str(FIXTURE / "src"))
    monkeypatch.syspath_prepend(str(directory))
    monkeypatch.delenv(DISABLE_AUTOLOAD_ENV, raising=False)
    reset_default_registry()
    yield directory
    reset_default_registry()
    for module in [
        m for m in sys.modules if m.startswith(("evsys_my_algo", "evsys_dup_plugin", "evsys_broken_plugin", "evsys_typo"))
    ]:
        del sys.modules[module]


def write_config(path: Path, params: str) -> Path:
    path.write_text(
        textwrap.dedent(
            """\
            model: {name: smollm2-135m-instruct}
            backend: {kind: local}
            algorithm:
              kind: my_algo
              params:
            """
        )
        + textwrap.indent(textwrap.dedent(params), "    ")
        + "data: {path: train.jsonl}\n",
        encoding="utf-8",
    )
    return path


def test_plugins_lists_the_third_party_algorithm(site: Path, evsys_cli: Callable[[list[str]], tuple[int, str, str]]) -> None:
    code, out, _ = evsys_cli(["plugins", "--json"])
    assert code == 0
    report = json.loads(out)
    mine = [p for p in report["plugins"] if p["name"] == "my_algo"]
    assert mine == [
        {
            "kind": "algorithm",
            "name": "my_algo",
            "distribution": "evsys-my-algo",
            "version": "0.3.1",
            "description": "An example third-party algorithm.",
            "target": "evsys_my_algo.algorithm:MyAlgo",
        }
    ]
    code, out, _ = evsys_cli(["plugins"])
    assert code == 0
    line = next(line for line in out.splitlines() if " my_algo " in line)
    assert line.split()[:4] == ["algorithm", "my_algo", "evsys-my-algo", "0.3.1"]


def test_schema_composes_the_third_party_params(site: Path, evsys_cli: Callable[[list[str]], tuple[int, str, str]]) -> None:
    code, out, _ = evsys_cli(["schema"])
    assert code == 0
    schema = json.loads(out)
    definitions = schema["definitions"]
    assert "my_algo" in definitions["AlgorithmSpec"]["properties"]["kind"]["enum"]
    params = definitions["algorithm.my_algo.params"]
    assert params["properties"]["beam_width"]["maximum"] == 64
    assert params["properties"]["learning_rate"]["description"] == "AdamW learning rate."
    branch = next(
        b for b in definitions["AlgorithmSpec"]["allOf"] if b["if"]["properties"]["kind"]["const"] == "my_algo"
    )
    assert branch["then"]["properties"]["params"] == {"$ref": "#/definitions/algorithm.my_algo.params"}


def test_validate_checks_the_third_party_params(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, evsys_cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path / "good.yaml", "learning_rate: 1e-4\nmax_steps: 3\nbeam_width: 8\n")
    code, out, err = evsys_cli(["validate", "good.yaml"])
    assert (code, err) == (0, "")
    assert out == "OK: good.yaml (algorithm my_algo, backend local, 3 steps)\n"

    write_config(tmp_path / "bad.yaml", "learning_rate: 1e-4\nmax_steps: 3\nbeam_widht: 100\ntemperature: 0\n")
    code, out, err = evsys_cli(["validate", "bad.yaml"])
    assert code == 1
    assert out == ""
    assert err.splitlines() == [
        "bad.yaml:8:5: algorithm.params.beam_widht: unknown key 'beam_widht' (did you mean 'beam_width'?)",
        "bad.yaml:9:5: algorithm.params.temperature: Input should be greater than 0",
        "FAILED: bad.yaml (2 errors)",
    ]

    (tmp_path / "train.jsonl").write_text('{"inputs": {"q": "hi"}, "expected": "x"}\n', encoding="utf-8")
    write_config(tmp_path / "tmpl.yaml", "learning_rate: 1e-4\nmax_steps: 3\nprompt_template: '{question}'\n")
    monkeypatch.setenv("EVSYS_CACHE_DIR", str(tmp_path / "cache"))
    code, out, err = evsys_cli(["validate", "tmpl.yaml", "--deep"])
    assert code == 1
    assert "train.jsonl:1: inputs: template placeholder {question} is not a key of inputs (keys: q)" in err.splitlines()


def test_fixture_is_found_by_a_fresh_interpreter(site: Path) -> None:
    """The same discovery in a subprocess: nothing in-process is involved."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(FIXTURE / "src")])}
    env.pop(DISABLE_AUTOLOAD_ENV, None)
    done = subprocess.run(
        [sys.executable, "-m", "evsys.cli.main", "plugins", "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    names = {(p["kind"], p["name"], p["distribution"]) for p in json.loads(done.stdout)["plugins"]}
    assert ("algorithm", "my_algo", "evsys-my-algo") in names


def test_a_shared_name_is_namespaced_by_package(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, evsys_cli: Callable[[list[str]], tuple[int, str, str]]
) -> None:
    (site / "evsys_dup_plugin.py").write_text(
        textwrap.dedent(
            """\
            from evsys.schema.plugins import hookimpl
            from evsys.schema.params import TrainingParams

            @hookimpl
            def evsys_register(register):
                register.algorithm("my_algo", "evsys_dup_plugin:X", params=TrainingParams)
            """
        ),
        encoding="utf-8",
    )
    install_dist(site, "evsys-dup-plugin", "1.0", {"dup": "evsys_dup_plugin"})
    code, out, err = evsys_cli(["plugins", "--json"])
    assert (code, err) == (0, "")
    owners = {p["distribution"] for p in json.loads(out)["plugins"] if p["name"] == "my_algo"}
    assert owners == {"evsys-my-algo", "evsys-dup-plugin"}
    code, out, err = evsys_cli(["schema"])
    kinds = json.loads(out)["definitions"]["AlgorithmSpec"]["properties"]["kind"]["enum"]
    assert {"evsys-my-algo:my_algo", "evsys-dup-plugin:my_algo"} <= set(kinds) and "my_algo" not in kinds

    monkeypatch.chdir(tmp_path)
    write_config(tmp_path / "bare.yaml", "learning_rate: 1e-4\nmax_steps: 3\n")
    code, out, err = evsys_cli(["validate", "bare.yaml"])
    assert code == 1
    (line, _) = err.splitlines()
    assert line.startswith("bare.yaml:4:3: algorithm.kind: algorithm 'my_algo' is registered by ")
    assert "name one as '" in line and "'evsys-my-algo:my_algo'" in line and "'evsys-dup-plugin:my_algo'" in line

    config = (tmp_path / "bare.yaml").read_text(encoding="utf-8").replace("kind: my_algo", "kind: evsys-my-algo:my_algo")
    (tmp_path / "named.yaml").write_text(config.replace("max_steps: 3", "max_steps: 3\n    beam_widht: 2"), encoding="utf-8")
    code, out, err = evsys_cli(["validate", "named.yaml"])
    assert code == 1
    assert err.splitlines()[0] == "named.yaml:8:5: algorithm.params.beam_widht: unknown key 'beam_widht' (did you mean 'beam_width'?)"


def make_plugin(name: str, body: str) -> types.ModuleType:
    """An in-process plugin module whose ``evsys_register`` hook runs ``body`` (with ``register`` in scope)."""
    module = types.ModuleType(name)
    header = "from evsys.schema.params import TrainingParams\nfrom evsys.schema.plugins import hookimpl\n\n"
    exec(header + "@hookimpl\ndef evsys_register(register):\n" + textwrap.indent(body, "    "), module.__dict__)
    return module


def test_shared_names_in_process_plugins() -> None:
    body = 'register.algorithm("twin", "dup:X", params=TrainingParams)'
    registry = build_registry(plugins=[("pkg-a", make_plugin("a", body)), ("pkg-b", make_plugin("b", body))], autoload=False)
    assert registry.names("algorithm") == ["pkg-a:twin", "pkg-b:twin"]
    assert registry.get("algorithm", "pkg_B:twin").distribution == "pkg-b"
    with pytest.raises(UnknownNameError) as caught:
        registry.get("algorithm", "twin")
    assert str(caught.value) == "algorithm 'twin' is registered by pkg-a and pkg-b: name one as 'pkg-a:twin' or 'pkg-b:twin'"


def test_a_plugin_that_registers_a_name_twice_is_broken_alone() -> None:
    twice = 'register.algorithm("twin", "dup:X", params=TrainingParams)\nregister.transform("once", "dup:t")\n' * 2
    good = 'register.transform("fine", "ok:t")'
    registry = build_registry(plugins=[("pkg-twice", make_plugin("t", twice)), ("pkg-good", make_plugin("g", good))], autoload=False)
    assert [b.error for b in registry.broken] == ["pkg-twice: algorithm 'twin' is registered twice"]
    assert registry.names("transform") == ["fine"] and registry.names("algorithm") == []


def test_a_plugin_written_for_the_per_kind_hooks_gets_one_line() -> None:
    module = types.ModuleType("old_style")
    exec(textwrap.dedent("""\
        from evsys.schema.plugins import hookimpl

        @hookimpl
        def evsys_register_algorithms(registry):
            registry.register("old", "old:Old")
        """), module.__dict__)
    good = make_plugin("g", 'register.transform("fine", "ok:t")')
    registry = build_registry(plugins=[("evsys-old", module), ("evsys-good", good)], autoload=False)
    assert [(b.distribution, b.error) for b in registry.broken] == [
        (
            "evsys-old",
            "defines evsys_register_algorithms, not an EvSys hook: register every kind in one "
            "`@hookimpl def evsys_register(register)` (register.algorithm(...), register.callback(...); see docs/plugins.md)",
        )
    ]
    assert registry.names("transform") == ["fine"]


TYPO_PLUGIN = """\
from evsys.schema.plugins import hookimpl
from evsys.schema.params import NoParams, TrainingParams

@hookimpl
def evsys_register(register):
    register.algorithm("typo_algo", "evsys_typo_impl:TypoAlog", params=TrainingParams)
    register.callback("typo_log", "evsys_typo_impl:TypoLogg", params=NoParams)
    register.verifier_function("typo_check", "evsys_typo_impl:typo_chek")
"""
TYPO_IMPL = """\
import torch

class TypoAlgo:
    pass

class TypoLog:
    pass

def typo_check(output, expected):
    return 1.0
"""
VALIDATE_AND_REPORT_TORCH = """\
import sys
from evsys.cli.main import main
code = main(["validate", "c.yaml", "--deep"])
print("torch imported:", "torch" in sys.modules, "exit:", code)
"""


def test_a_mistyped_target_fails_validate_deep_with_the_plugins_name(site: Path, tmp_path: Path) -> None:
    """Algorithm, callback and verifier targets are checked without importing them (torch stays out)."""
    (site / "evsys_typo_plugin.py").write_text(TYPO_PLUGIN, encoding="utf-8")
    (site / "evsys_typo_impl.py").write_text(TYPO_IMPL, encoding="utf-8")
    install_dist(site, "evsys-typo-plugin", "0.1", {"typo": "evsys_typo_plugin"})
    work = tmp_path / "work"
    (work / "bench").mkdir(parents=True)
    (work / "train.jsonl").write_text('{"inputs": {"question": "hi"}, "expected": "x"}\n', encoding="utf-8")
    task = {"task_id": "t1", "instruction": "q", "verifier": {"kind": "in_process", "fn_name": "typo_check", "expected": "x"}}
    (work / "bench" / "tasks.jsonl").write_text(json.dumps(task) + "\n", encoding="utf-8")
    (work / "c.yaml").write_text(
        "model: {name: smollm2-135m-instruct}\nbackend: {kind: local}\nalgorithm: {kind: typo_algo, params: {max_steps: 1, learning_rate: 0.1}}\n"
        "data: {path: train.jsonl}\ncallbacks: [{kind: typo_log}]\n"
        "metadata: {benchmark: [{name: val, path: bench, metrics: [pass@1]}]}\n",
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(FIXTURE / "src")]), "EVSYS_CACHE_DIR": str(tmp_path / "cache")}
    env.pop(DISABLE_AUTOLOAD_ENV, None)
    done = subprocess.run([sys.executable, "-c", VALIDATE_AND_REPORT_TORCH], cwd=work, capture_output=True, text=True, env=env, check=False)
    assert done.stdout.splitlines()[-1] == "torch imported: False exit: 1", done.stderr
    errors = [line for line in done.stderr.splitlines() if "broken target" in line]
    assert errors == [
        "c.yaml:3:13: algorithm.kind: algorithm 'typo_algo' of plugin evsys-typo-plugin has a broken target "
        "evsys_typo_impl:TypoAlog: module 'evsys_typo_impl' has no attribute 'TypoAlog' (did you mean 'TypoAlgo'?)",
        "c.yaml:5:14: callbacks[0].kind: callback 'typo_log' of plugin evsys-typo-plugin has a broken target "
        "evsys_typo_impl:TypoLogg: module 'evsys_typo_impl' has no attribute 'TypoLogg' (did you mean 'TypoLog'?)",
        "bench/tasks.jsonl:1: verifier.fn_name: verifier function 'typo_check' of plugin evsys-typo-plugin has a broken "
        "target evsys_typo_impl:typo_chek: module 'evsys_typo_impl' has no attribute 'typo_chek' (did you mean 'typo_check'?)",
    ]


def test_broken_plugin_is_listed_and_does_not_break_the_others(site: Path, evsys_cli: Callable[[list[str]], tuple[int, str, str]]) -> None:
    (site / "evsys_broken_plugin.py").write_text("import a_module_that_does_not_exist\n", encoding="utf-8")
    install_dist(site, "evsys-broken-plugin", "0.0.1", {"broken": "evsys_broken_plugin"})
    code, out, err = evsys_cli(["plugins", "--json"])
    assert code == 0, err
    report = json.loads(out)
    assert {
        "name": "broken",
        "distribution": "evsys-broken-plugin",
        "version": "0.0.1",
        "error": "ModuleNotFoundError: No module named 'a_module_that_does_not_exist'",
    } in report["broken"]
    assert any(p["name"] == "my_algo" for p in report["plugins"])
    code, out, err = evsys_cli(["plugins"])
    assert code == 0
    table, broken = out.split("\nBroken plugins (", 1)
    assert " my_algo " in table
    assert broken.split(")", 1)[1].startswith(": their names are not registered\nNAME ")
    assert any(line.split()[:3] == ["broken", "evsys-broken-plugin", "0.0.1"] for line in broken.splitlines())


def test_disable_autoload(site: Path, monkeypatch: pytest.MonkeyPatch, evsys_cli: Callable[[list[str]], tuple[int, str, str]]) -> None:
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "1")
    reset_default_registry()
    code, out, _ = evsys_cli(["plugins", "--json"])
    assert code == 0
    assert json.loads(out) == {"plugins": [], "broken": []}
    code, out, _ = evsys_cli(["plugins"])
    assert out == "No plugins registered.\n"
