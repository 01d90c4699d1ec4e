"""Where one step of the fused decoder goes: its int8 GEMMs inside the step, the same GEMMs back to back,
and the step's other ops alone, beside the bandwidth bound.

The bundled SmolLM2-135M-Instruct with the int8 rollout copy (``rollout_weights: int8``), LoRA rank 1 on
q_proj/v_proj. Each batch size prefills a 16-token prompt (at batch > 1 the first row carries 3 left pads,
as real prompts of different lengths do, so attention runs with a mask) and times ``--steps`` decode
steps, ``--rounds`` times; medians. One JSON line per batch size::

    python benchmarks/decode_profile.py                 # batch 1 and 8, torch's threads
    EVSYS_BENCH_THREADS=1 python benchmarks/decode_profile.py --batches 1

Fields: ``copy_gbs``, ``rollout_bytes_per_token`` and ``decode_bound_ms`` (as the peer benchmark prints
them); ``step_ms`` (one decode step, sampling excluded); ``gemm_in_step_ms`` (the step's int8 GEMM calls,
timed one by one inside it); ``gemms_alone_ms`` (the same GEMM calls back to back on random inputs:
what reading the weights costs without anything between them); ``other_ops_ms`` (the step with every
GEMM replaced by zeros of its shape: the norms, rotary, cache, attention, LoRA and residual ops).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_common import RANK, TARGETS, copy_bandwidth_gbs, rollout_bytes_per_token, set_bench_threads


def build() -> Any:
    """The local backend on the bundled model with the int8 fused decoder, LoRA rank 1 on q/v."""
    from evsys.backends.local.backend import LocalBackend
    from evsys.backends.local.params import LocalBackendParams
    from evsys.backends.local.resolve import BUNDLED_ALIAS
    from evsys.schema.protocols import BackendSetup

    set_bench_threads()
    return LocalBackend(
        BackendSetup(model_name=BUNDLED_ALIAS, lora_rank=RANK, seed=0),
        LocalBackendParams(device="cpu", target_modules=TARGETS, rollout_engine="fused", rollout_weights="int8"),
    )


def steps(decoder: Any, batch: int, count: int, rounds: int, probe: Callable[[], float]) -> tuple[float, float]:
    """Median step ms and median ``probe()`` ms (what the wrapped GEMMs took during that step)."""
    import torch

    prompt = torch.arange(16)[None].expand(batch, -1) + 100
    valid = torch.ones_like(prompt)
    if batch > 1:
        valid[0, :3] = 0
    positions = (valid.cumsum(-1) - 1).clamp(min=0)
    wall, inner = [], []
    with torch.inference_mode():
        for _ in range(rounds):
            decoder.start(prompt, valid, positions, 16 + count)
            token = torch.ones(batch, dtype=torch.long)
            for i in range(count):
                probe()
                start = time.perf_counter()
                decoder.step(token, positions[:, -1] + 1 + i)
                wall.append(time.perf_counter() - start)
                inner.append(probe())
            decoder.finish()
    return statistics.median(wall) * 1e3, statistics.median(inner) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import torch

    from evsys.backends.local.engines import fused_linear

    backend = build()
    decoder = backend.engines.fused.decoder
    bandwidth, size = copy_bandwidth_gbs(), rollout_bytes_per_token(backend)
    assert size is not None
    real = fused_linear.int8_gemm
    calls: list[tuple[torch.Size, Any, bool]] = []
    spent = [0.0]

    def timed(x: torch.Tensor, packed: Any, reduce_range: bool) -> torch.Tensor:
        start = time.perf_counter()
        y = real(x, packed, reduce_range)
        spent[0] += time.perf_counter() - start
        calls.append((x.shape, packed, reduce_range))
        return y

    def zeros(x: torch.Tensor, packed: Any, reduce_range: bool) -> torch.Tensor:
        return torch.zeros(x.shape[0], out_features[id(packed)], dtype=x.dtype)

    def take() -> float:
        value, spent[0] = spent[0], 0.0
        return value

    out_features = {}
    for lin in [*(x for layer in decoder.layers for x in layer.linears()), decoder.head]:
        for packed in lin.packed:
            out_features[id(packed)] = torch.ops.quantized.linear_unpack(packed)[0].shape[0]
    for batch in args.batches:
        try:
            fused_linear.int8_gemm = timed
            step_ms, gemm_ms = steps(decoder, batch, args.steps, args.rounds, take)
            per_step = len(calls) // (args.steps * args.rounds)
            one_step = [(torch.randn(shape), packed, rr) for shape, packed, rr in calls[-per_step:]]
            fused_linear.int8_gemm = zeros
            other_ms, _ = steps(decoder, batch, args.steps, args.rounds, lambda: 0.0)
        finally:
            fused_linear.int8_gemm = real
        alone = []
        with torch.inference_mode():
            for _ in range(args.steps):
                start = time.perf_counter()
                for x, packed, reduce_range in one_step:
                    real(x, packed, reduce_range)
                alone.append(time.perf_counter() - start)
        calls.clear()
        bound = size / (bandwidth * 1e9) * 1e3
        row = {
            "batch": batch,
            "torch_threads": torch.get_num_threads(),
            "loadavg": Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None,
            "copy_gbs": round(bandwidth, 1),
            "rollout_bytes_per_token": size,
            "decode_bound_ms": round(bound, 2),
            "step_ms": round(step_ms, 2),
            "step_over_bound": round(step_ms / bound, 2),
            "gemm_in_step_ms": round(gemm_ms, 2),
            "gemms_alone_ms": round(statistics.median(alone) * 1e3, 2),
            "other_ops_ms": round(other_ms, 2),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
