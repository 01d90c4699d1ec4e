"""What keeps the local backend's peak memory down: freed heap pages go back to the OS; one [P, V] buffer less in the loss."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from evsys.backends.local.memory import release_freed_memory


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc only")
def test_release_hands_free_heap_pages_back() -> None:
    # 400 blocks of 64 KiB (below glibc's mmap threshold: they live on the heap), touched so they are
    # resident; all but the last freed, so the heap top stays pinned and glibc keeps ~25 MiB free
    blocks = [bytearray(b"x" * 65536) for _ in range(400)]
    pinned = blocks[-1]
    del blocks
    before = _rss_kib()
    assert release_freed_memory() is True
    after = _rss_kib()
    assert before - after > 10 * 1024, (before, after)
    assert pinned[0] == ord("x")


def test_release_is_a_no_op_without_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    from evsys.backends.local import memory

    monkeypatch.setattr(memory, "_malloc_trim", lambda: None)  # a C library without malloc_trim (musl, macOS)
    assert memory.release_freed_memory() is False


def test_target_logprobs_equals_log_softmax_gather() -> None:
    import torch

    from evsys.backends.local.backend import TargetLogprobs

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 50, generator=gen, dtype=torch.float64, requires_grad=True)
    targets = torch.stack([torch.randperm(50, generator=gen)[:3] for _ in range(6)])
    targets[0, 1] = targets[0, 0]  # a repeated target gets both gradients
    weights = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    reference = torch.log_softmax(logits, dim=-1).gather(1, targets)
    (grad_reference,) = torch.autograd.grad((reference * weights).sum(), logits)
    ours = TargetLogprobs.apply(logits * 1.0, targets)  # it consumes its input: give it a fresh tensor
    torch.testing.assert_close(ours, reference)
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), logits)
    torch.testing.assert_close(grad_ours, grad_reference)
    # the backward reuses the saved logits' buffer: a second backward through the same graph is refused
    # by autograd's version check, never silently wrong
    again = TargetLogprobs.apply(logits * 1.0, targets).sum()
    again.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        again.backward()
