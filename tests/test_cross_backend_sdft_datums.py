"""For the same rollouts and the same teacher numbers, SDFT (and GRPO) send the same datums on Tinker as on local.

The Tinker side is the real adapter over the simulated service (real ``tinker.types``, every request
checked); the local side is the real ``LocalBackend`` on a tiny model, with ``sample`` and
``topk_logprobs`` answering the numbers the simulated service answers. What goes to ``forward_backward``
on local is converted with the adapter's own ``to_tinker_datum`` and compared array by array with what
the simulated training client received.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from evsys.algorithms.grpo.algorithm import GRPO
from evsys.algorithms.grpo.params import GRPOParams
from evsys.algorithms.sdft.algorithm import SDFT
from evsys.algorithms.sdft.params import SDFTParams
from evsys.backends.local.backend import LocalBackend
from evsys.backends.local.params import LocalBackendParams
from evsys.backends.local.testing import build_tiny_model_dir
from evsys.backends.tinker.backend import TinkerBackend
from evsys.backends.tinker.convert import sampling_params, to_tinker_datum
from evsys.backends.tinker.models import ModelLimits
from evsys.backends.tinker.params import TinkerBackendParams
from evsys.backends.tinker.simulator import SimulatedService
from evsys.schema.protocols import BackendSetup, Datum, ForwardBackwardResult, SampledSequence, TopKLogprobs
from evsys.schema.rows import PromptExample, TaskRow


class ScriptedLocalBackend(LocalBackend):
    """The real local backend whose rollouts and teacher numbers are the simulated Tinker service's."""

    sent: list[Datum]
    service: SimulatedService

    def sample(self, prompts, n=1, max_tokens=64, temperature=1.0, stop=None, seed=None):  # type: ignore[override]
        params = sampling_params(max_tokens, temperature, stop, seed)
        out = []
        for prompt in prompts:
            group = []
            for tokens, logprobs, reason in self.service.draw_completions(prompt, n, params):
                body = tokens[:-1] if tokens[-1] == self.tokenizer.eos_token_id else tokens
                text = self.tokenizer.decode(body, skip_special_tokens=True)
                group.append(SampledSequence(tokens, [float(x) for x in logprobs], text, reason))
            out.append(group)
        return out

    def topk_logprobs(self, sequences: Sequence[Sequence[int]], k: int, from_position):  # type: ignore[override]
        starts = [from_position] * len(sequences) if isinstance(from_position, int) else list(from_position)
        result = []
        for sequence, start in zip(sequences, starts, strict=True):
            dense = self.service.topk_rows(sequence, k)
            result.append(
                TopKLogprobs(
                    token_ids=np.asarray(dense.token_ids)[start:].tolist(),
                    logprobs=np.asarray(dense.logprobs)[start:].astype(float).tolist(),
                )
            )
        return result

    def compute_logprobs(self, sequences, from_position=1, base=True):  # type: ignore[override]
        starts = [from_position] * len(sequences) if isinstance(from_position, int) else list(from_position)
        model = self.service.model
        return [[model.logprob(seq[:i], seq[i]) for i in range(start, len(seq))] for seq, start in zip(sequences, starts, strict=True)]

    def forward_backward(self, batch, loss_fn, loss_fn_config=None) -> ForwardBackwardResult:  # type: ignore[override]
        self.sent = list(batch)
        return super().forward_backward(batch, loss_fn, loss_fn_config)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


def test_sdft_builds_identical_datums_on_both_backends(tiny_model: Path, tmp_path: Path) -> None:
    params = SDFTParams(learning_rate=1e-4, max_steps=1, batch_size=2, lora_rank=1, topk=3, user_template="{question}", max_new_tokens=8)
    batch = [
        PromptExample(inputs={"question": "Capital of Atlantis?"}, expected="Poseidonia"),
        PromptExample(inputs={"question": "Capital of Utopia?"}, expected="Amaurot"),
    ]

    local = ScriptedLocalBackend(BackendSetup(model_name=str(tiny_model), lora_rank=1, run_dir=tmp_path / "local"), LocalBackendParams())
    limits = ModelLimits(vocab_size=len(local.tokenizer), context_length=2048, max_lora_rank=64)
    service = SimulatedService(tokenizer=local.tokenizer, limits=limits, seed=0)
    local.service = SimulatedService(tokenizer=local.tokenizer, limits=limits, seed=0)
    SDFT(params, local, None).train_step(batch, step=1)

    # The same tokens on both sides: the Tinker backend renders with the local model's chat template here.
    remote = TinkerBackend(
        BackendSetup(model_name="Qwen/Qwen3.5-4B", lora_rank=1, run_dir=tmp_path / "tinker"),
        TinkerBackendParams(renderer="huggingface"),
        service_client=service,
    )
    SDFT(params, remote, None).train_step(batch, step=1)
    remote.close()

    ((_, request),) = [r for r in service.training_clients[0].requests if r[0] == "forward_backward"]
    assert request["loss_fn"] == "cross_entropy"
    sent_to_tinker = request["data"]
    assert len(sent_to_tinker) == len(local.sent) == 2
    for local_datum, tinker_datum in zip(local.sent, sent_to_tinker, strict=True):
        converted = to_tinker_datum(local_datum)
        assert converted.model_input.to_ints() == tinker_datum.model_input.to_ints()
        assert set(converted.loss_fn_inputs) == set(tinker_datum.loss_fn_inputs) == {"target_tokens", "weights"}
        for key in ("target_tokens", "weights"):
            ours, theirs = converted.loss_fn_inputs[key], tinker_datum.loss_fn_inputs[key]
            assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
            np.testing.assert_array_equal(ours.to_numpy(), theirs.to_numpy())
        weights = tinker_datum.loss_fn_inputs["weights"].to_numpy()
        assert weights.shape[1] == 3 and weights.sum() > 0  # (N, K) soft targets over the answer


class FirstCompletionWins(GRPO):
    """Reward 1 for the first completion of each task, 0 for the others: a group of two has a spread."""

    def reward(self, output: str, task: TaskRow) -> tuple[float, bool]:
        seen: set[str] = self.__dict__.setdefault("seen", set())
        first = task.resolved_id not in seen
        seen.add(task.resolved_id)
        return float(first), False


def test_grpo_sends_the_same_rl_inputs_on_both_backends(tiny_model: Path, tmp_path: Path) -> None:
    params = GRPOParams(learning_rate=1e-4, max_steps=1, batch_size=2, lora_rank=1, group_size=2, max_new_tokens=8, kl_coef=0.1)
    batch = [
        PromptExample(inputs={"question": "Capital of Atlantis?"}, expected="Poseidonia"),
        PromptExample(inputs={"question": "Capital of Utopia?"}, expected="Amaurot"),
    ]
    local = ScriptedLocalBackend(BackendSetup(model_name=str(tiny_model), lora_rank=1, run_dir=tmp_path / "local"), LocalBackendParams())
    limits = ModelLimits(vocab_size=len(local.tokenizer), context_length=2048, max_lora_rank=64)
    local.service = SimulatedService(tokenizer=local.tokenizer, limits=limits, seed=0)
    local_metrics = FirstCompletionWins(params, local, None).train_step(batch, step=1)

    service = SimulatedService(tokenizer=local.tokenizer, limits=limits, seed=0)
    remote = TinkerBackend(BackendSetup(model_name="Qwen/Qwen3.5-4B", lora_rank=1, run_dir=tmp_path / "tinker"), TinkerBackendParams(renderer="huggingface"), service_client=service)
    remote_metrics = FirstCompletionWins(params, remote, None).train_step(batch, step=1)
    remote.close()

    assert local_metrics["train/kl_base"] == pytest.approx(remote_metrics["train/kl_base"], abs=1e-6)  # float32 on the wire
    ((_, request),) = [r for r in service.training_clients[0].requests if r[0] == "forward_backward"]
    assert request["loss_fn"] == "importance_sampling"
    sent_to_tinker = request["data"]
    assert len(sent_to_tinker) == len(local.sent) == 4
    for local_datum, tinker_datum in zip(local.sent, sent_to_tinker, strict=True):
        converted = to_tinker_datum(local_datum, "importance_sampling")
        assert converted.model_input.to_ints() == tinker_datum.model_input.to_ints()
        # Tinker's documented RL inputs, nothing else: the prompt is masked by advantage 0
        assert set(converted.loss_fn_inputs) == set(tinker_datum.loss_fn_inputs) == {"target_tokens", "logprobs", "advantages"}
        for key in ("target_tokens", "logprobs", "advantages"):
            ours, theirs = converted.loss_fn_inputs[key], tinker_datum.loss_fn_inputs[key]
            assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
            # the advantages fold in the KL term, whose base logprobs cross the wire as float32
            np.testing.assert_allclose(ours.to_numpy(), theirs.to_numpy(), rtol=0, atol=1e-6 if key == "advantages" else 0)
        advantages = tinker_datum.loss_fn_inputs["advantages"].to_numpy()
        assert np.count_nonzero(advantages) > 0
