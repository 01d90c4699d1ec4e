"""What the local-backend benchmarks share: the setup of docs/performance.md (model, LoRA, data) and a peak-RSS reading."""

from __future__ import annotations

import resource
from typing import Any

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


#: the CPU flags every benchmark prints beside its figures: the ones that decide which kernels run
SHOWN_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni")


def cpu_report() -> dict[str, Any]:
    """``{"kind", "flags"}``: the int8 kernels' CPU kind (after any kernel cap) and :data:`SHOWN_FLAGS` present."""
    from evsys.backends.local.cpu_features import cpu_flags, detect

    return {"kind": detect().kind, "flags": sorted(f for f in cpu_flags() if f in SHOWN_FLAGS)}


def set_bench_threads() -> None:
    """torch's intra-op threads from ``EVSYS_BENCH_THREADS`` (unset: torch's own choice)."""
    import os

    threads = os.environ.get("EVSYS_BENCH_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def copy_bandwidth_gbs(mib: int = 128, rounds: int = 5) -> float:
    """The machine's memory copy bandwidth, GB/s: bytes read plus bytes written by ``torch``'s copy of a
    ``mib`` MiB float32 buffer (far larger than any cache), best of ``rounds``, with torch's threads."""
    import time

    import torch

    src = torch.ones(mib * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)  # touch every page first
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * 4 / best / 1e9


def fused_decoder(backend: Any) -> Any:
    """The local backend's fused decoder once a rollout has built it; None otherwise (the transformers engine)."""
    fused = backend.engines.fused
    return fused.decoder if fused is not None and fused.built else None


def rollout_bytes_per_token(backend: object) -> int | None:
    """Bytes one batch-1 decode step must read from the fused decoder's weights: every linear's base
    weights (float, or the int8 copy plus its float outlier columns), the LoRA factors and the output
    head. None without a fused decoder (the generic loop)."""
    import torch

    decoder = fused_decoder(backend)
    if decoder is None:
        return None
    total = 0
    for lin in [*(x for layer in decoder.layers for x in layer.linears()), decoder.head]:
        tensors = [lin.weight, lin.outlier_weight_t, lin.lora_a, lin.lora_bt, lin.bias]
        total += sum(t.numel() * t.element_size() for t in tensors if t is not None)
        for packed in lin.packed or []:
            total += torch.ops.quantized.linear_unpack(packed)[0].numel()  # one byte per int8 weight
    return total


def decode_ms_per_token(backend: object, batch: int = 1, steps: int = 32, rounds: int = 3) -> float | None:
    """Median milliseconds of one fused-decoder step (``batch`` rows) after a short prompt: the decode
    loop's own cost, without sampling, tokenizing or the prompt's prefill. None without a fused decoder."""
    import statistics
    import time

    import torch

    decoder = fused_decoder(backend)
    if decoder is None:
        return None
    prompt = torch.full((batch, 16), 1, dtype=torch.long)
    times = []
    with torch.inference_mode():
        for _ in range(rounds):
            decoder.start(prompt, torch.ones_like(prompt), torch.arange(16)[None].expand(batch, -1), 16 + steps)
            token = torch.ones(batch, dtype=torch.long)
            for i in range(steps):
                start = time.perf_counter()
                decoder.step(token, torch.full((batch,), 16 + i, dtype=torch.long))
                times.append(time.perf_counter() - start)
            decoder.finish()
    return statistics.median(times) * 1e3


def decode_against_bound(backend: object, pairs: int = 5) -> dict[str, Any]:
    """The batch-1 decode step against the bandwidth bound, measured in ``pairs`` back-to-back pairs of a
    copy-bandwidth probe (best of 3) and a round of 32 decode steps, medians over the pairs: on a VM whose
    speed drifts (this one's probe read 29-57 GB/s and its decode step 8.4-12.3 ms within one minute), one
    probe set against one decode figure can land on different states of the machine, and a median over
    pairs spread through the measurement does not depend on one of them. Fields: ``copy_gbs`` (median probe),
    ``rollout_bytes_per_token``, ``decode_bound_ms`` (bytes over the median probe), ``decode_ms_per_token``
    (median step), ``decode_over_bound`` (median of the per-pair ratios); only the first two without a fused
    decoder."""
    import statistics

    size = rollout_bytes_per_token(backend)
    if size is None:
        return {"copy_gbs": round(copy_bandwidth_gbs(), 1), "rollout_bytes_per_token": None}

    def pair() -> tuple[float, float]:
        gbs, ms = copy_bandwidth_gbs(rounds=3), decode_ms_per_token(backend, rounds=1)
        assert ms is not None  # the bytes per token are known only when a fused decoder exists
        return gbs, ms

    measured = [pair() for _ in range(pairs)]
    bandwidth = statistics.median(gbs for gbs, _ in measured)
    return {
        "copy_gbs": round(bandwidth, 1),
        "rollout_bytes_per_token": size,
        "decode_bound_ms": round(size / bandwidth / 1e6, 2),
        "decode_ms_per_token": round(statistics.median(ms for _, ms in measured), 2),
        "decode_over_bound": round(statistics.median(ms / (size / gbs / 1e6) for gbs, ms in measured), 2),
    }
