"""What the local-backend benchmarks share: the setup of docs/performance.md (model, LoRA, data) and a peak-RSS reading."""

from __future__ import annotations

import resource

NEW_TOKENS = 32
RANK = 1
TOP_K = 20
LR = 1e-4
TARGETS = ["q_proj", "v_proj"]
DATA = [
    ("What is the capital of France?", "Paris"),
    ("How many legs does a spider have?", "8"),
    ("What is 17 times 23?", "391"),
    ("Which planet is known as the red planet?", "Mars"),
    ("What gas do plants absorb from the air?", "carbon dioxide"),
    ("Who wrote Romeo and Juliet?", "William Shakespeare"),
    ("What is the boiling point of water in Celsius?", "100"),
    ("How many days are in a leap year?", "366"),
]


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB: VmHWM (reset by exec, unlike ru_maxrss, which
    a child started by subprocess inherits from its parent), else ru_maxrss (KiB on Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
