"""The plugin's own tests: EvSys's contract checks (evsys.testing) plus what is specific to it.

Run them after installing the package: pip install -e './examples/plugin_package[test]' && pytest examples/plugin_package/tests
"""

from __future__ import annotations

import json
from pathlib import Path

import evsys_acme.plugin
from evsys_acme.callbacks import EventLog
from evsys_acme.transforms import qa_pairs
from evsys_acme.verifiers import starts_with

from evsys.testing import check_callback, check_plugin, check_verifier_function


def test_registers_its_three_parts() -> None:
    registry = check_plugin(evsys_acme.plugin, "evsys-acme")
    assert registry.names("verifier_function") == ["acme_starts_with"]
    assert registry.names("transform") == ["acme_qa_pairs"]
    assert registry.names("callback") == ["acme_event_log"]
    assert registry.get("verifier_function", "acme_starts_with").load() is starts_with


def test_verifier_keeps_the_contract() -> None:
    check_verifier_function(starts_with, passing=("  berlin is the capital", "Berlin"), failing=("It is Berlin", "Berlin"))
    assert starts_with("BERLIN", "Berlin", ignore_case=False) == 0.0


def test_transform() -> None:
    assert qa_pairs({"q": "Capital of Peru?", "a": "Lima"}) == {"inputs": {"question": "Capital of Peru?"}, "expected": "Lima"}
    assert qa_pairs({"q": " ", "a": "x"}) is None


def test_callback_keeps_the_contract(tmp_path: Path) -> None:
    log = EventLog()
    check_callback(log, run_dir=tmp_path)
    events = [json.loads(line)["event"] for line in (tmp_path / "contract" / "events.jsonl").read_text().splitlines()]
    assert events == ["run_start", "step", "eval", "step", "eval", "run_end"]
