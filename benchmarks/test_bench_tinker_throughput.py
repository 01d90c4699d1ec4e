"""Throughput of an SDFT step on the simulated Tinker service with set latencies (pytest-benchmark).

Run with ``python -m pytest benchmarks/test_bench_tinker_throughput.py -o addopts="--import-mode=importlib" --benchmark-only -s``.

The service's latencies are those of a busy Tinker session scaled by ``SCALE``: sample 3 s, teacher
(prompt logprobs) 1 s, forward_backward 2 s, optim_step 0.5 s, each drawn with +-20 % jitter; a batch
of 32 prompts x 4 rollouts. The critical-path bound of a step is what the service alone needs:
``max over rollouts (sample latency + its scoring latency) + forward_backward + optim_step`` (the
requests the step cannot overlap). Recorded in ``extra_info``: the step wall time over that bound
(target: at most 1.1), and the same ratio when each rollout's scoring waits for the whole batch to
finish sampling (``sample`` then ``topk_logprobs``) for comparison.
"""

from __future__ import annotations

import time
from typing import Any

from evsys.algorithms.sdft.algorithm import SDFT
from evsys.algorithms.sdft.params import SDFTParams
from evsys.backends.tinker.simulator import Latency
from evsys.backends.tinker.testing import simulated_backend
from evsys.schema.rows import PromptExample

SCALE = 1 / 5
"""Latencies are the service's times this factor (3 s sampling becomes 150 ms)."""
LATENCY = Latency(sample_s=3 * SCALE, teacher_s=1 * SCALE, forward_backward_s=2 * SCALE, optim_s=0.5 * SCALE, jitter=0.2, seed=1)
BATCH = [PromptExample(inputs={"question": f"Capital of country {i}?"}, expected=f"City {i}") for i in range(32)]
PARAMS = SDFTParams(
    learning_rate=1e-4, max_steps=3, batch_size=32, lora_rank=1, topk=4, num_rollouts=4, max_new_tokens=8,
    user_template="{question}",
)


class WithoutStreaming:
    """The backend with ``sample_and_score`` hidden: the algorithm samples the whole batch, then scores it."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        if name == "sample_and_score":
            raise AttributeError(name)
        return getattr(self._backend, name)


def critical_path(tally: Any, since: int) -> float:
    """The step's bound from the latencies the service drew for requests ``since`` on."""
    drawn = tally.drawn
    by_method: dict[str, list[float]] = {}
    for method, _, latency in drawn[since:]:
        by_method.setdefault(method, []).append(latency)
    rollouts = [drawn[s][2] + drawn[t][2] for t, s in tally.links if t >= since]
    return max(rollouts) + sum(by_method.get("forward_backward", [])) + sum(by_method.get("optim_step", []))


def measure(streaming: bool, steps: int = 3) -> tuple[list[float], list[float]]:
    """Wall time and critical-path bound of ``steps`` SDFT steps (the first one, which warms up, dropped)."""
    backend, service = simulated_backend(latency=LATENCY)
    algorithm = SDFT(PARAMS, backend if streaming else WithoutStreaming(backend), None)  # type: ignore[arg-type]
    walls, bounds = [], []
    for step in range(1, steps + 1):
        since = len(service.tally.drawn)
        started = time.perf_counter()
        algorithm.train_step(BATCH, step)
        wall = time.perf_counter() - started
        if step > 1:
            walls.append(wall)
            bounds.append(critical_path(service.tally, since))
    backend.close()
    return walls, bounds


def test_bench_sdft_step_on_the_simulated_service(benchmark: Any) -> None:
    result: dict[str, Any] = {}

    def run() -> None:
        result["walls"], result["bounds"] = measure(streaming=True)

    benchmark.pedantic(run, rounds=1, iterations=1)
    ratio = max(w / b for w, b in zip(result["walls"], result["bounds"], strict=True))
    plain_walls, plain_bounds = measure(streaming=False)
    plain = max(w / b for w, b in zip(plain_walls, plain_bounds, strict=True))
    benchmark.extra_info.update(
        scale=SCALE,
        step_wall_s=[round(w, 4) for w in result["walls"]],
        critical_path_s=[round(b, 4) for b in result["bounds"]],
        wall_over_bound=round(ratio, 3),
        wall_over_bound_without_streaming=round(plain, 3),
    )
    print(f"\nSDFT step on the simulated service (latencies x{SCALE}): wall/bound {ratio:.3f} "
          f"(without streaming the scoring: {plain:.3f}); walls {result['walls']}, bounds {result['bounds']}")
    assert ratio <= 1.1
