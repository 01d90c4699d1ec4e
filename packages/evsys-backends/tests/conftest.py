"""Fixtures shared by the local backend's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from evsys.backends.local.testing import build_tiny_model_dir


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny matrices gain nothing from threads, and lose a lot when other processes share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama on disk (read only: tests write checkpoints elsewhere)."""
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama") / "model")
