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


_PACK_SCRIPT = """
import gc, sys, torch
from evsys.backends.local.engines import fused as rollout
from evsys.backends.local.memory import release_freed_memory
from concurrent.futures import ThreadPoolExecutor

def anon_kib():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])

weights = [torch.randn(960, 576) for _ in range(30)]  # SmolLM2's fused q|k|v, one per layer
with ThreadPoolExecutor(1) as packer:
    packer.submit(lambda: None).result()
    gc.collect(); release_freed_memory(); before = anon_kib()
    packed = [rollout._pack_int8([w], None, packer) for w in weights]
    gc.collect(); release_freed_memory(); after = anon_kib()
print((after - before) / (30 * 960 * 576 / 1024))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc only")
def test_int8_copy_costs_about_its_own_size() -> None:
    # In a fresh interpreter (a known heap): 30 fused q|k|v weights packed the way FusedDecoder packs
    # them. fbgemm's packed layout is ~6% over the int8 bytes; packed on this thread instead, between
    # the quantization's temporaries, the copy stayed 1.6-1.7x its size (docs/performance.md).
    import subprocess

    import torch

    from evsys.backends.local.engines.fused import int8_available

    if not int8_available(torch.device("cpu")):
        pytest.skip("no fbgemm int8 kernels in this build")
    out = subprocess.run([sys.executable, "-c", _PACK_SCRIPT], check=True, capture_output=True, text=True)
    ratio = float(out.stdout.strip().splitlines()[-1])
    assert ratio < 1.25, ratio
