"""Throughput of an SDFT step on the simulated Tinker service with set latencies (pytest-benchmark).

Run with ``python -m pytest benchmarks/test_bench_tinker_throughput.py -o addopts="--import-mode=importlib" --benchmark-only -s``.

The service's latencies are those of a busy Tinker session scaled by ``SCALE``: sample 3 s, teacher
(prompt logprobs) 1 s, forward_backward 2 s, optim_step 0.5 s, each drawn with +-20 % jitter; a batch
of 32 prompts x 4 rollouts. The critical-path bound of a step is what the service alone needs:
``max over rollouts (sample latency + its scoring latency) + forward_backward + optim_step`` (the
requests the step cannot overlap). Recorded in ``extra_info``: the step wall time over that bound
(target: at most 1.1), and the same ratio when each rollout's scoring waits for the whole batch to
finish sampling (``sample`` then ``topk_logprobs``) for comparison. Two figures that do not depend on
how busy the machine is beside the run go with it: the longest wait between a sample's return and
the submission of its scoring (the client's scheduling), and the CPU seconds of a step with zero
latencies (the client's and the simulator's own work, which a busy machine stretches). The printed
lines name the machine: cores, load average and CPU flags.
"""

from __future__ import annotations

import os
import time
from typing import Any

from evsys.algorithms.sdft.algorithm import SDFT
from evsys.algorithms.sdft.params import SDFTParams
from evsys.backends.tinker.simulator import Latency
from evsys.backends.tinker.testing import SampleThenScore, simulated_backend
from evsys.schema.rows import PromptExample

SCALE = float(os.environ.get("EVSYS_BENCH_TINKER_SCALE", "1"))
"""Latencies are the service's times this factor (default 1: the latencies above; ``EVSYS_BENCH_TINKER_SCALE=0.2``
runs 5x faster, but then this machine's own per-step work, the same at every scale, weighs 5x more in the ratio)."""
LATENCY = Latency(sample_s=3 * SCALE, teacher_s=1 * SCALE, forward_backward_s=2 * SCALE, optim_s=0.5 * SCALE, jitter=0.2, seed=1)
BATCH = [PromptExample(inputs={"question": f"Capital of country {i}?"}, expected=f"City {i}") for i in range(32)]
PARAMS = SDFTParams(
    learning_rate=1e-4, max_steps=3, batch_size=32, lora_rank=1, topk=4, num_rollouts=4, max_new_tokens=8,
    user_template="{question}",
)




def critical_path(tally: Any, since: int) -> float:
    """The step's bound from the latencies the service drew for requests ``since`` on."""
    drawn = tally.drawn
    by_method: dict[str, list[float]] = {}
    for method, _, latency in drawn[since:]:
        by_method.setdefault(method, []).append(latency)
    rollouts = [drawn[s][2] + drawn[t][2] for t, s in tally.links if t >= since]
    return max(rollouts) + sum(by_method.get("forward_backward", [])) + sum(by_method.get("optim_step", []))


def scoring_delays(tally: Any, since: int) -> list[float]:
    """Seconds from each sample's return to the submission of a scoring of it, for requests ``since`` on."""
    drawn = tally.drawn
    return [drawn[t][1] - (drawn[s][1] + drawn[s][2]) for t, s in tally.links if t >= since]


def machine() -> str:
    """Cores, load average and CPU flags of this machine (the figures depend on them)."""
    try:
        words = set(open("/proc/cpuinfo").read().split())  # noqa: SIM115
    except OSError:
        words = set()
    flags = " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni") if f in words) or "none of avx2/avx512"
    load = " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return f"{os.cpu_count()} cores, load average {load}, CPU flags: {flags}"


def measure(streaming: bool, steps: int = 3) -> tuple[list[float], list[float], float]:
    """Wall time and critical-path bound of ``steps`` SDFT steps (the first one, which warms up, dropped),
    and the longest delay from a sample's return to its scoring's submission."""
    backend, service = simulated_backend(latency=LATENCY)
    algorithm = SDFT(PARAMS, backend if streaming else SampleThenScore(backend), None)  # type: ignore[arg-type]
    walls, bounds, delays = [], [], [0.0]
    for step in range(1, steps + 1):
        since = len(service.tally.drawn)
        started = time.perf_counter()
        algorithm.train_step(BATCH, step)
        wall = time.perf_counter() - started
        if step > 1:
            walls.append(wall)
            bounds.append(critical_path(service.tally, since))
            delays.extend(scoring_delays(service.tally, since))
    backend.close()
    return walls, bounds, max(delays)


def cpu_per_step(steps: int = 4) -> list[float]:
    """CPU seconds (this process, all threads) of each SDFT step at zero latency, the first step dropped."""
    backend, _ = simulated_backend()
    algorithm = SDFT(PARAMS, backend, None)
    seconds = []
    for step in range(1, steps + 1):
        started = time.process_time()
        algorithm.train_step(BATCH, step)
        if step > 1:
            seconds.append(time.process_time() - started)
    backend.close()
    return seconds


def test_bench_sdft_step_on_the_simulated_service(benchmark: Any) -> None:
    result: dict[str, Any] = {}

    def run() -> None:
        result["walls"], result["bounds"], result["delay"] = measure(streaming=True)

    benchmark.pedantic(run, rounds=1, iterations=1)
    ratio = max(w / b for w, b in zip(result["walls"], result["bounds"], strict=True))
    plain_walls, plain_bounds, _ = measure(streaming=False)
    plain = max(w / b for w, b in zip(plain_walls, plain_bounds, strict=True))
    cpu = cpu_per_step()
    benchmark.extra_info.update(
        scale=SCALE,
        step_wall_s=[round(w, 4) for w in result["walls"]],
        critical_path_s=[round(b, 4) for b in result["bounds"]],
        wall_over_bound=round(ratio, 3),
        wall_over_bound_without_streaming=round(plain, 3),
        max_scoring_delay_s=round(result["delay"], 4),
        cpu_s_per_step_at_zero_latency=[round(c, 3) for c in cpu],
        machine=machine(),
    )
    print(f"\nSDFT step on the simulated service (latencies x{SCALE}): wall/bound {ratio:.3f} "
          f"(without streaming the scoring: {plain:.3f}); walls {[round(w, 3) for w in result['walls']]}, "
          f"bounds {[round(b, 3) for b in result['bounds']]}; longest sample-to-scoring delay {result['delay'] * 1000:.0f} ms; "
          f"CPU per step at zero latency {[round(c, 3) for c in cpu]} s\nmachine: {machine()}")
    assert ratio <= 1.1


def run_steps(off_policy: bool, steps: int = 4) -> tuple[float, list[float]]:
    """Seconds for steps 2..``steps`` (step 1 warms up), one step off policy or not, and each step's staleness."""
    from evsys.engine.pipeline import StepPipeline

    backend, _ = simulated_backend(latency=LATENCY, max_steps_off_policy=1 if off_policy else 0)

    def forever() -> Any:
        while True:
            yield BATCH

    pipeline = StepPipeline(SDFT(PARAMS, backend, None), backend, forever(), overlap=lambda step: step < steps)
    pipeline.run(1)
    started = time.perf_counter()
    staleness = [pipeline.run(step).get("train/off_policy_steps", 0.0) for step in range(2, steps + 1)]
    elapsed = time.perf_counter() - started
    backend.close()
    return elapsed, staleness


def test_bench_one_step_off_policy_pipeline(benchmark: Any) -> None:
    result: dict[str, Any] = {}

    def run() -> None:
        result["off"], result["staleness"] = run_steps(off_policy=True)

    benchmark.pedantic(run, rounds=1, iterations=1)
    on, _ = run_steps(off_policy=False)
    gain = on / result["off"]
    benchmark.extra_info.update(scale=SCALE, on_policy_s=round(on, 3), off_policy_s=round(result["off"], 3),
                                speedup=round(gain, 3), staleness=result["staleness"])
    print(f"\n3 SDFT steps on the simulated service (latencies x{SCALE}): on policy {on:.2f} s, one step off policy "
          f"{result['off']:.2f} s (x{gain:.2f}); staleness {result['staleness']}")
    assert result["staleness"] == [1.0, 1.0, 1.0]
