"""Which library kernel reads one decoded token's weights fastest: every GEMM of one SmolLM2-135M token
(30 layers' fused q|k|v, o, fused gate|up and down_proj, and the 49k-row output head, each layer with its
own weights, so the weights come from memory as in a real decode step) run back to back, batch 1 and 8.

Kernels: ``F.linear`` in float32 and bf16; fbgemm's fp16-weight GEMM; fbgemm's dynamic-quantization
int8 GEMM (``quantized::linear_dynamic`` on weights packed by the rollout copy's own ``pack_int8``, what
``rollout_weights: int8`` runs); ``_weight_int8pack_mm``
(int8 weights, bf16 or float32 activations); ``_weight_int4pack_mm_for_cpu`` (int4 weights in groups of
64, bf16 activations). The shapes come from the bundled model's config; the weights are random (a
kernel's speed does not depend on the values). One JSON line per kernel: the milliseconds of one token's
GEMMs (median of ``--rounds``), the bytes its weights take, and those bytes over the time. A first line
gives the machine: CPU flags, kernel caps, torch threads, the copy and read bandwidths, and how much
memory fbgemm's packed int8 copy takes against its int8 bytes (its AVX2 kernels pad every 512 input
channels: a 576-wide weight packs at ~1.8x its size)::

    python benchmarks/int8_kernels.py
    FBGEMM_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/int8_kernels.py
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench_common import copy_bandwidth_gbs, cpu_report, set_bench_threads


def token_shapes() -> list[tuple[int, int]]:
    """``(out, in)`` of every GEMM one token runs through the bundled model (int8 layout: fused q|k|v and
    gate|up; down_proj without its 64 float outlier channels)."""
    from transformers import AutoConfig

    from evsys.backends.local.engines.fused_linear import DOWN_OUTLIER_CHANNELS
    from evsys.backends.local.resolve import BUNDLED_ALIAS, resolve_model_dir

    c = AutoConfig.from_pretrained(resolve_model_dir(BUNDLED_ALIAS, None))
    head_dim = c.hidden_size // c.num_attention_heads
    qkv = (c.num_attention_heads + 2 * c.num_key_value_heads) * head_dim
    layer = [
        (qkv, c.hidden_size),
        (c.hidden_size, c.num_attention_heads * head_dim),
        (2 * c.intermediate_size, c.hidden_size),
        (c.hidden_size, c.intermediate_size - DOWN_OUTLIER_CHANNELS),
    ]
    return layer * c.num_hidden_layers + [(c.vocab_size, c.hidden_size)]


def _rss_anon_mib() -> float:
    from evsys.backends.local.memory import release_freed_memory

    gc.collect()
    release_freed_memory()
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:")) / 1024


def read_bandwidth_gbs(mib: int = 256, rounds: int = 5) -> float:
    """GB/s of summing a ``mib`` MiB float32 buffer (bytes read only), best of ``rounds``."""
    import torch

    buffer = torch.ones(mib * 2**20 // 4)
    buffer.sum()
    best = min(_timed(buffer.sum) for _ in range(rounds))
    return buffer.numel() * 4 / best / 1e9


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


Kernel = tuple[int, Callable[[dict[int, Any]], None]]


def kernels(shapes: list[tuple[int, int]]) -> tuple[dict[str, Kernel], float]:
    """Per kernel: the bytes of its weights and a function running one token's GEMMs on inputs ``{in: x}``;
    and the MiB fbgemm's packed int8 weights added to this process."""
    import torch
    import torch.nn.functional as F

    weights = [torch.randn(n, k) * 0.02 for n, k in shapes]
    scales = [w.abs().amax(1) / 127 for w in weights]
    int8 = [torch.round(w / s[:, None]).clamp(-127, 127).to(torch.int8) for w, s in zip(weights, scales, strict=True)]
    out: dict[str, Kernel] = {}
    total = sum(n * k for n, k in shapes)

    def run(op: Callable[[Any, Any], Any], args: list[Any], dtype: Any = None) -> Callable[[dict[int, Any]], None]:
        def go(xs: dict[int, Any]) -> None:
            for (_, k), arg in zip(shapes, args, strict=True):
                op(xs[k] if dtype is None else xs[k].to(dtype), arg)

        return go

    out["F.linear float32"] = (4 * total, run(F.linear, weights))
    bf16 = [w.bfloat16() for w in weights]
    out["F.linear bf16"] = (2 * total, run(F.linear, bf16, torch.bfloat16))
    packed_fp16 = [torch.ops.quantized.linear_prepack_fp16(w, None) for w in weights]
    out["fbgemm fp16 weights"] = (2 * total, run(torch.ops.quantized.linear_dynamic_fp16, packed_fp16))
    from evsys.backends.local.engines.fused_linear import REDUCE_RANGE, pack_int8

    before = _rss_anon_mib()
    with ThreadPoolExecutor(max_workers=1) as packer:  # as the rollout copy is built: packed on its own thread
        packed_int8 = [pack_int8([w], packer=packer) for w in weights]
    packed_mib = _rss_anon_mib() - before
    out["fbgemm dynamic int8"] = (
        total,
        run(lambda x, pieces: [torch.ops.quantized.linear_dynamic(x, p, REDUCE_RANGE) for p in pieces], packed_int8),
    )
    pairs_bf16 = [(q, s.bfloat16()) for q, s in zip(int8, scales, strict=True)]
    pairs_f32 = list(zip(int8, scales, strict=True))
    out["int8 weight-only, bf16 activations"] = (
        total,
        run(lambda x, p: torch._weight_int8pack_mm(x, p[0], p[1]), pairs_bf16, torch.bfloat16),
    )
    out["int8 weight-only, float32 activations"] = (
        total,
        run(lambda x, p: torch._weight_int8pack_mm(x, p[0], p[1]), pairs_f32),
    )
    group = 64
    int4 = []
    for w in weights:
        n, k = w.shape
        g = w.reshape(n, k // group, group)
        low, high = g.amin(-1), g.amax(-1)
        step = ((high - low) / 15).clamp(min=1e-6)
        q = torch.round((g - low[..., None]) / step[..., None]).clamp(0, 15).to(torch.int32).reshape(n, k)
        scale_zero = torch.stack([step.t(), (low + 8 * step).t()], -1).contiguous().bfloat16()
        int4.append((torch._convert_weight_to_int4pack_for_cpu(q, 1), scale_zero))
    out["int4 weight-only (groups of 64), bf16 activations"] = (
        total // 2,
        run(lambda x, p: torch._weight_int4pack_mm_for_cpu(x, p[0], group, p[1]), int4, torch.bfloat16),
    )
    return out, packed_mib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    import torch

    set_bench_threads()
    warnings.simplefilter("ignore")  # the quantized-tensor deprecation notices
    torch.manual_seed(0)
    shapes = token_shapes()
    table, packed_mib = kernels(shapes)
    int8_mib = sum(n * k for n, k in shapes) / 2**20
    machine = {
        "cpu": cpu_report(),
        "caps": {k: os.environ[k] for k in ("FBGEMM_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY") if k in os.environ},
        "torch_threads": torch.get_num_threads(),
        "copy_gbs": round(copy_bandwidth_gbs(), 1),
        "read_gbs": round(read_bandwidth_gbs(), 1),
        "int8_mib": round(int8_mib, 1),
        "fbgemm_packed_int8_mib": round(packed_mib, 1),
    }
    print(json.dumps(machine), flush=True)
    with torch.inference_mode():
        for name, (size, go) in table.items():
            row: dict[str, Any] = {"kernel": name, "weight_mb": round(size / 1e6, 1)}
            for batch in args.batches:
                xs = {k: torch.randn(batch, k) for _, k in shapes}
                go(xs)  # warm-up
                ms = statistics.median(_timed(lambda go=go, xs=xs: go(xs)) for _ in range(args.rounds)) * 1e3
                row[f"batch{batch}_ms"] = round(ms, 2)
                row[f"batch{batch}_gbs"] = round(size / ms / 1e6, 1)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
