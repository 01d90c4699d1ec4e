"""Shared fixtures for the cross-package and end-to-end tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (configs' relative paths are resolved against it)."""
    return REPO_ROOT


@pytest.fixture(scope="session", autouse=True)
def _shared_model_cache() -> None:
    """Keep the converted bundled model in one cache for the whole session (and between sessions)."""
    os.environ.setdefault("EVSYS_CACHE_DIR", str(REPO_ROOT / ".evsys-cache"))
