"""Fixtures the evsys-data tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from evsys.data import plugin as data_plugin
from evsys.schema import plugins
from evsys.schema.plugins import build_registry, reset_default_registry
from evsys.schema.registry import PluginRegistry


@pytest.fixture()
def registry() -> Iterator[PluginRegistry]:
    """A registry of evsys-data's own plugin (the ``jsonl`` and ``hf`` sources), also the process-wide one."""
    built = build_registry(plugins=[("evsys-data", data_plugin)], autoload=False)
    reset_default_registry(built)
    yield built
    reset_default_registry(None)


@pytest.fixture(autouse=True)
def _forget_in_process_registrations(monkeypatch: pytest.MonkeyPatch) -> None:
    """The transforms a test registers with ``@register_transform`` last for that test only."""
    monkeypatch.setattr(plugins, "_IN_PROCESS", [])
