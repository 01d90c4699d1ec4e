"""What keeps the local backend's peak memory down: freed heap pages go back to the OS; one [P, V] buffer less in the loss.

The resident-memory figures these parts give depend on the host (glibc, its heap): benchmarks/test_bench_local_memory.py
measures them.
"""

from __future__ import annotations

import sys

import pytest

from evsys.backends.local.memory import release_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_release_calls_glibc_malloc_trim() -> None:
    # how much comes back depends on the host's heap: benchmarks/test_bench_local_memory.py measures it
    assert release_freed_memory() is True


def test_release_is_a_no_op_without_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    from evsys.backends.local import memory

    monkeypatch.setattr(memory, "_malloc_trim", lambda: None)  # a C library without malloc_trim (musl, macOS)
    assert memory.release_freed_memory() is False


def test_target_logprobs_equals_log_softmax_gather() -> None:
    import torch

    from evsys.backends.local.losses import TargetLogprobs

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
