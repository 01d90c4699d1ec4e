"""The plugin registrations and the package's import cost."""

from __future__ import annotations

import json
import subprocess
import sys

from evsys.schema.plugins import build_registry
from evsys.verifiers import functions, plugin


def test_registers_kinds_functions_and_metrics() -> None:
    registry = build_registry([("evsys-verifiers", plugin)], autoload=False)
    assert registry.names("verifier") == ["in_process", "python", "subprocess"]
    assert set(registry.names("verifier_function")) == set(functions.BUILTIN_FUNCTIONS)
    assert set(registry.names("metric")) == {"pass@k", "mean@k", "maj@k", "pass^k", "accuracy"}
    assert registry.find("metric", "pass@8").name == "pass@k"
    for registration in registry.registrations():
        assert callable(registration.load()), registration.name


def test_entry_point_is_installed() -> None:
    from importlib import metadata

    names = {ep.value for ep in metadata.entry_points(group="evsys")}
    assert "evsys.verifiers.plugin" in names


def _import_report(statement: str) -> dict[str, object]:
    code = (
        "import sys, time, json\n"
        "start = time.perf_counter()\n"
        f"{statement}\n"
        "elapsed = time.perf_counter() - start\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'numpy', 'subprocess', 'sympy', 'math_verify') if m in sys.modules)\n"
        "print(json.dumps({'elapsed': elapsed, 'heavy': heavy}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)


def test_import_is_cheap() -> None:
    best = min((_import_report("import evsys.verifiers") for _ in range(3)), key=lambda r: r["elapsed"])
    assert best["elapsed"] < 0.2
    assert best["heavy"] == []
    plugin_import = _import_report("import evsys.verifiers.plugin")
    assert "torch" not in plugin_import["heavy"] and "subprocess" not in plugin_import["heavy"]


def test_public_api_exports() -> None:
    import evsys.verifiers as api

    for name in api.__all__:
        assert getattr(api, name) is not None
    assert api.pass_at_k(10, 3, 1) == 0.3
