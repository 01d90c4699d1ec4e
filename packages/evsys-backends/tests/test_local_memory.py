"""evsys.backends.local.memory: freed heap pages go back to the OS."""

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
