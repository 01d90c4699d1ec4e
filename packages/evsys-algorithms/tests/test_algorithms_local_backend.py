"""One train_step of each algorithm against the real LocalBackend on a tiny random llama (CPU, seconds).

The losses themselves are the backend's; these tests check the algorithm side end to end: the datums
the algorithms build are accepted, the reported per-token losses match what the datums imply, and a
few steps move the model the intended way.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BACKEND_FILE = (
    Path(__file__).resolve().parents[2] / "evsys-backends" / "src" / "evsys" / "backends" / "local" / "backend.py"
)
pytestmark = pytest.mark.skipif(
    not BACKEND_FILE.is_file(),
    reason="the local backend (packages/evsys-backends/src/evsys/backends/local/backend.py) is not built yet",
)

from evsys.algorithms.grpo.algorithm import GRPO  # noqa: E402
from evsys.algorithms.grpo.params import GRPOParams  # noqa: E402
from evsys.algorithms.sdft.algorithm import SDFT  # noqa: E402
from evsys.algorithms.sdft.params import SDFTParams  # noqa: E402
from evsys.algorithms.sft.algorithm import SFT  # noqa: E402
from evsys.algorithms.sft.params import SFTParams  # noqa: E402
from evsys.schema.protocols import Backend, BackendSetup, Datum, ForwardBackwardResult, SampledSequence  # noqa: E402
from evsys.schema.rows import ChatExample, PromptExample, TaskRow  # noqa: E402

EXAMPLES = [
    PromptExample(inputs={"question": "What is the capital of France?"}, expected="Paris"),
    PromptExample(inputs={"question": "What is the capital of Japan?"}, expected="Tokyo"),
]


class Recording:
    """Wraps a backend and keeps every batch handed to forward_backward."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self.batches: list[tuple[list[Datum], str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    @property
    def tokenizer(self) -> Any:
        return self._backend.tokenizer

    def forward_backward(self, batch: Any, loss_fn: Any, loss_fn_config: Any = None) -> ForwardBackwardResult:
        self.batches.append((list(batch), loss_fn))
        return self._backend.forward_backward(batch, loss_fn, loss_fn_config)


@pytest.fixture
def local_backend(tiny_model_dir: Path) -> Iterator[Recording]:
    from evsys.backends.local.backend import LocalBackend
    from evsys.backends.local.params import LocalBackendParams

    backend = LocalBackend(
        BackendSetup(model_name=str(tiny_model_dir), lora_rank=2, seed=0),
        LocalBackendParams(device="cpu", rollout_weights="model"),  # exact on-policy ratios (1) are checked
    )
    assert isinstance(backend, Backend)
    try:
        yield Recording(backend)
    finally:
        backend.close()


def _finite(metrics: dict[str, float]) -> None:
    assert metrics, "no metrics"
    for key, value in metrics.items():
        assert key.startswith("train/"), key
        assert math.isfinite(value), (key, value)


def test_algorithms_local_sdft_step(local_backend: Recording) -> None:
    params = SDFTParams(learning_rate=1e-3, max_steps=1, batch_size=2, lora_rank=2, topk=5, max_new_tokens=6)
    metrics = SDFT(params, local_backend, None).train_step(EXAMPLES, step=0)
    _finite(metrics)
    assert metrics["train/skipped"] == 0.0 and metrics["train/answer_tokens"] > 0
    ((datums, loss_fn),) = local_backend.batches
    assert loss_fn == "cross_entropy" and len(datums) == 2
    for datum in datums:
        weights = datum.weights
        assert len(weights) == len(datum.input_tokens) and all(len(row) == 5 for row in weights)
        assert all(sum(row) == pytest.approx(1.0, abs=1e-5) or sum(row) == 0.0 for row in weights)
    # the student's CE toward the renormalized teacher top-K is never below the teacher's entropy (Gibbs)
    assert metrics["train/mean_loss"] >= metrics["train/teacher_entropy"] - 1e-4


def test_algorithms_local_sft_steps_lower_the_loss(local_backend: Recording) -> None:
    params = SFTParams(learning_rate=5e-3, max_steps=4, batch_size=2, lora_rank=2)
    algo = SFT(params, local_backend, None)
    batch = [
        EXAMPLES[0],
        ChatExample(messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}]),
    ]
    losses = [algo.train_step(batch, step)["train/mean_loss"] for step in range(4)]
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0], losses
    datums, _ = local_backend.batches[0]
    tokenizer = local_backend.tokenizer
    trained = [t for t, w in zip(datums[0].target_tokens, datums[0].weights, strict=True) if w]
    assert tokenizer.decode(trained).startswith("Paris")
    trained_chat = [t for t, w in zip(datums[1].target_tokens, datums[1].weights, strict=True) if w]
    assert tokenizer.decode(trained_chat).startswith("Hello there") and "Hi" not in tokenizer.decode(trained_chat)


class LengthRewardGRPO(GRPO):
    """A deterministic reward that needs no verifier: 1.0 when the output's token ids sum to an even number."""

    def reward(self, output: str, task: TaskRow) -> tuple[float, bool]:
        return float(sum(self.backend.tokenizer.encode(output, add_special_tokens=False)) % 2 == 0), False


@pytest.mark.parametrize("loss_fn", ["importance_sampling", "ppo"])
def test_algorithms_local_grpo_step(local_backend: Recording, loss_fn: str) -> None:
    params = GRPOParams(
        learning_rate=1e-3, max_steps=1, batch_size=2, lora_rank=2, group_size=6, max_new_tokens=5, loss_fn=loss_fn
    )
    metrics = LengthRewardGRPO(params, local_backend, None).train_step(EXAMPLES, step=0)
    _finite(metrics)
    assert metrics["train/skipped"] == 0.0, "every group's rewards came out equal; pick another seed"
    ((datums, used),) = local_backend.batches
    assert used == loss_fn
    # on-policy: the sampler logprobs are the current policy's, so every ratio is 1 and the loss sum is
    # -sum(advantages) over completion tokens (for ppo too: nothing is clipped at ratio 1)
    expected = -sum(sum(d.advantages) for d in datums)
    assert metrics["train/loss_sum"] == pytest.approx(expected, abs=1e-3 * max(1.0, metrics["train/tokens"]))
    assert metrics["train/fb/ratio:mean"] == pytest.approx(1.0, abs=1e-3)
    assert metrics["train/mean_loss"] == pytest.approx(expected / metrics["train/tokens"], abs=1e-3)


def test_algorithms_local_grpo_kl_penalty(local_backend: Recording) -> None:
    params = GRPOParams(learning_rate=1e-3, max_steps=1, lora_rank=2, group_size=6, max_new_tokens=5, kl_coef=0.1)
    metrics = LengthRewardGRPO(params, local_backend, None).train_step(EXAMPLES[:1], step=0)
    _finite(metrics)
    assert metrics["train/skipped"] == 0.0
    # before any update the policy is the base model: every sampled token's log-ratio is 0
    assert metrics["train/kl_base"] == pytest.approx(0.0, abs=1e-4)


class ScriptedSamples(Recording):
    """The real local backend whose ``sample`` returns fixed completions (token ids and sampler logprobs)."""

    def __init__(self, backend: Any, completions: list[tuple[list[int], list[float], str]]) -> None:
        super().__init__(backend)
        self.completions = completions

    def sample(self, prompts: Any, n: int = 1, **_: Any) -> list[list[SampledSequence]]:
        assert n == len(self.completions)
        return [[SampledSequence(t, lp, text, "stop") for t, lp, text in self.completions] for _ in prompts]


class WinRewardGRPO(GRPO):
    def reward(self, output: str, task: TaskRow) -> tuple[float, bool]:
        return float(output == "win"), False


def test_algorithms_local_grpo_kl_of_a_token_outside_the_base_top_k(local_backend: Recording, tiny_model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)  # the base model, by hand

    def base_next(seq: list[int]) -> torch.Tensor:
        with torch.no_grad():
            return torch.log_softmax(reference(input_ids=torch.tensor([seq])).logits[0, -1].float(), dim=-1)

    prompt = local_backend.render_chat([{"role": "user", "content": "What is the capital of France?"}])
    first = base_next(prompt)
    rare, common = int(first.argmin()), int(first.argmax())
    top20 = first.topk(20)
    assert rare not in top20.indices.tolist()  # the sampled token is far outside the base model's top-20
    after_rare = base_next([*prompt, rare])
    follow = int(after_rare.argmax())
    sampler = [[-1.0, -2.0], [-0.5]]
    backend = ScriptedSamples(
        local_backend._backend, [([rare, follow], sampler[0], "win"), ([common], sampler[1], "lose")]
    )
    params = GRPOParams(learning_rate=1e-3, max_steps=1, lora_rank=2, group_size=2, kl_coef=0.5)
    metrics = WinRewardGRPO(params, backend, None).train_step(EXAMPLES[:1], step=0)

    # k1 log-ratios d = sampler - base (exact base logprobs), folded as A += kl_coef * (mean(d) - d)
    d = [sampler[0][0] - float(first[rare]), sampler[0][1] - float(after_rare[follow]), sampler[1][0] - float(first[common])]
    mean = sum(d) / 3
    assert metrics["train/kl_base"] == pytest.approx(mean, abs=1e-4)
    ((datums, _),) = backend.batches
    n = len(prompt) - 1
    assert datums[0].advantages[n:] == pytest.approx([0.5 + 0.5 * (mean - d[0]), 0.5 + 0.5 * (mean - d[1])], abs=1e-4)
    assert datums[1].advantages[n:] == pytest.approx([-0.5 + 0.5 * (mean - d[2])], abs=1e-4)
    # the top-K stand-in (the 20th logprob, an upper bound) would have been off by this much for that token
    assert float(top20.values[-1]) - float(first[rare]) > 0.5
