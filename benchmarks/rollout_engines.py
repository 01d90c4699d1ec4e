"""The local backend's rollout engines on the same work: seconds per ``sample`` call, interleaved.

The bundled SmolLM2-135M-Instruct in float32 on CPU, LoRA rank 1 on q_proj/v_proj, temperature 1, EOS
never ending a rollout (every row decodes ``--tokens`` tokens), prompts from ``bench_common.DATA``.
Each round runs every variant once, in turn (A B C A B C ...), so a busy machine slows all alike; the
medians over the rounds after a warm-up one are printed with the CPU's SIMD flags::

    python benchmarks/rollout_engines.py --batch 1 --tokens 64 --rounds 5
    python benchmarks/rollout_engines.py --batch 8 --tokens 32 --variants fused transformers

Variants: ``fused`` (``rollout_engine: fused``), ``fused-int8`` (plus ``rollout_weights: int8``),
``transformers`` (``generate`` with its dynamic cache), ``transformers-static`` (``generate`` with a
static cache), ``transformers-compile`` (static cache, the model's forward under ``torch.compile``; its
first call, compile included, is printed apart).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from bench_common import DATA, RANK, TARGETS, cpu_report, peak_rss_mib

VARIANTS = ("fused", "fused-int8", "transformers", "transformers-static", "transformers-compile")


def build(variant: str) -> Any:
    """A backend whose ``sample`` runs ``variant``."""
    import torch

    from evsys.backends.local.backend import LocalBackend
    from evsys.backends.local.params import LocalBackendParams
    from evsys.backends.local.resolve import BUNDLED_ALIAS
    from evsys.schema.protocols import BackendSetup

    engine = "fused" if variant.startswith("fused") else "transformers"
    weights = "int8" if variant == "fused-int8" else "model"
    backend = LocalBackend(
        BackendSetup(model_name=BUNDLED_ALIAS, lora_rank=RANK, seed=0),
        LocalBackendParams(device="cpu", target_modules=TARGETS, rollout_engine=engine, rollout_weights=weights),
    )
    backend.eos_token_ids = frozenset()
    if variant in ("transformers-static", "transformers-compile"):
        backend.engines.library.cache = "static"
    if variant == "transformers-compile":
        backend._causal_lm.forward = torch.compile(backend._causal_lm.forward, dynamic=False)
    return backend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after one warm-up round")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=["fused", "transformers"])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"cpu flags: {' '.join(cpu_report()['flags'])}; torch threads {torch.get_num_threads()}; torch {torch.__version__}")
    backends = {v: build(v) for v in args.variants}
    some = next(iter(backends.values()))
    prompts = [some.render_chat([{"role": "user", "content": q}]) for q, _ in DATA]
    prompts = [prompts[i % len(prompts)] for i in range(args.batch)]
    times: dict[str, list[float]] = {v: [] for v in args.variants}
    for round_ in range(args.rounds + 1):
        for variant, backend in backends.items():
            start = time.perf_counter()
            out = backend.sample(prompts, max_tokens=args.tokens, temperature=1.0, seed=round_)
            elapsed = time.perf_counter() - start
            assert all(len(s.tokens) == args.tokens for group in out for s in group)
            if round_ == 0:
                print(f"  warm-up {variant}: {elapsed:.2f} s")
            else:
                times[variant].append(elapsed)
    base = statistics.median(times[args.variants[0]])
    print(f"batch {args.batch}, {args.tokens} new tokens, {args.rounds} interleaved rounds (medians):")
    for variant, values in times.items():
        median = statistics.median(values)
        rate = args.batch * args.tokens / median
        print(f"  {variant:22s} {median:6.2f} s  {rate:6.1f} tok/s  x{median / base:.2f} of {args.variants[0]}")
    print(f"peak RSS (all variants in one process): {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
