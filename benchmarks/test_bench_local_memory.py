"""Resident-memory effects of the local backend's memory parts, measured on this host (Linux, glibc).

These depend on the C library and its heap, so they live here, not in the unit tests (which check the
same parts' structure: packages/evsys-backends/tests/test_local_memory.py and test_local_rollout.py)::

    python -m pytest benchmarks/test_bench_local_memory.py -o addopts="--import-mode=importlib" -s
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from evsys.backends.local.memory import release_freed_memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc only")


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_release_hands_free_heap_pages_back() -> None:
    # 400 blocks of 64 KiB (below glibc's mmap threshold: they live on the heap), touched so they are
    # resident; all but the last freed, so the heap top stays pinned and glibc keeps ~25 MiB free
    blocks = [bytearray(b"x" * 65536) for _ in range(400)]
    pinned = blocks[-1]
    del blocks
    before = _rss_kib()
    assert release_freed_memory() is True
    after = _rss_kib()
    print(f"\nmalloc_trim returned {(before - after) / 1024:.1f} MiB of ~25 MiB freed")
    assert before - after > 10 * 1024, (before, after)
    assert pinned[0] == ord("x")


_PACK_SCRIPT = """
import gc, sys, torch
from evsys.backends.local.engines.fused_linear import pack_int8
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
    packed = [pack_int8([w], None, packer) for w in weights]
    gc.collect(); release_freed_memory(); after = anon_kib()
print((after - before) / (30 * 960 * 576 / 1024))
"""


def test_int8_copy_costs_about_its_own_size() -> None:
    # In a fresh interpreter (a known heap): 30 fused q|k|v weights packed the way FusedDecoder packs
    # them. fbgemm's packed layout is ~6% over the int8 bytes; packed on this thread instead, between
    # the quantization's temporaries, the copy stayed 1.6-1.7x its size (docs/performance.md).
    import torch

    from evsys.backends.local.engines.fused_decoder import int8_available

    if not int8_available(torch.device("cpu")):
        pytest.skip("no fbgemm int8 kernels in this build")
    out = subprocess.run([sys.executable, "-c", _PACK_SCRIPT], check=True, capture_output=True, text=True)
    ratio = float(out.stdout.strip().splitlines()[-1])
    print(f"\nresident int8 copy / int8 bytes: {ratio:.2f}")
    assert ratio < 1.25, ratio
