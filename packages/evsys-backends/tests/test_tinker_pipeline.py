"""One step off policy on the tinker backend: step t+1 samples while step t trains, and records its staleness."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from evsys.algorithms.sdft.algorithm import SDFT
from evsys.algorithms.sdft.params import SDFTParams
from evsys.backends.tinker.simulator import Latency
from evsys.backends.tinker.testing import simulated_backend
from evsys.engine.pipeline import StepPipeline
from evsys.schema.rows import PromptExample

BATCH = [PromptExample(inputs={"question": f"Capital of {i}?"}, expected=f"City {i}") for i in range(4)]
PARAMS = SDFTParams(learning_rate=1e-4, max_steps=4, batch_size=4, lora_rank=1, topk=3, num_rollouts=2, max_new_tokens=4, user_template="{question}")
LATENCY = Latency(sample_s=0.08, teacher_s=0.02, forward_backward_s=0.08, optim_s=0.02)


def forever() -> Iterator[list[Any]]:
    while True:
        yield BATCH


def test_the_next_step_samples_while_this_one_trains_and_records_its_staleness() -> None:
    backend, service = simulated_backend(latency=LATENCY, max_steps_off_policy=1)
    assert backend.max_steps_off_policy == 1
    steps = StepPipeline(SDFT(PARAMS, backend, None), backend, forever(), overlap=lambda step: step < 4)
    metrics = [steps.run(step) for step in range(1, 5)]
    backend.close()
    assert [m["train/off_policy_steps"] for m in metrics] == [0.0, 1.0, 1.0, 1.0]
    log = service.log
    first_optim_done = log.index(("result", "optim_step"))
    policy_samples = [i for i, e in enumerate(log) if e == ("submit", "sample:policy-1")]
    # the second step's rollouts went out (from the first weights) before the first step's optim_step was done
    assert len(policy_samples) == 2 * len(BATCH) and policy_samples[len(BATCH)] < first_optim_done
    training = [m for m, _ in service.training_clients[0].requests if m in ("forward_backward", "optim_step")]
    assert training == ["forward_backward", "optim_step"] * 4  # the steps' training requests stay in order


def test_on_policy_by_default() -> None:
    backend, _ = simulated_backend()
    assert backend.max_steps_off_policy == 0
    steps = StepPipeline(SDFT(PARAMS, backend, None), backend, forever(), overlap=lambda step: False)
    assert "train/off_policy_steps" not in steps.run(1)
    backend.close()
