"""Fixtures shared by the local backend's tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

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


def _assert_same_rollouts(a: Sequence[Sequence[Any]], b: Sequence[Sequence[Any]], rel: float = 0.0) -> None:
    """Two engines' ``sample`` results: the same tokens, stop reasons and texts in every group; logprobs
    within 1e-5 absolute (and ``rel`` relative)."""
    for ga, gb in zip(a, b, strict=True):
        for sa, sb in zip(ga, gb, strict=True):
            assert (sa.tokens, sa.stop_reason, sa.text) == (sb.tokens, sb.stop_reason, sb.text)
            assert sa.logprobs == pytest.approx(sb.logprobs, rel=rel or None, abs=1e-5)


@pytest.fixture(scope="session")
def assert_same_rollouts() -> Callable[..., None]:
    """:func:`_assert_same_rollouts`, for the tests that hold two rollout engines equal."""
    return _assert_same_rollouts
