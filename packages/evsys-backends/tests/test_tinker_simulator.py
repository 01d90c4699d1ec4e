"""The simulated Tinker service: each documented rule refuses its malformed request with one line; answers
are deterministic from the seed and depend on the prompt."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from tinker import types

from evsys.backends.tinker.catalog import model_limits
from evsys.backends.tinker.models import ModelLimits
from evsys.backends.tinker.service_rules import ServiceRuleError
from evsys.backends.tinker.simulator import SimulatedService
from evsys.backends.tinker.testing import BYTE_LIMITS, ByteTokenizer

LIMITS = ModelLimits(vocab_size=300, context_length=16, max_lora_rank=32)


def service(limits: ModelLimits | None = LIMITS, seed: int = 0) -> SimulatedService:
    return SimulatedService(tokenizer=ByteTokenizer(), limits=limits, seed=seed)


def tensor(values: Any, dtype: Any) -> types.TensorData:
    return types.TensorData.from_numpy(np.ascontiguousarray(np.asarray(values, dtype=dtype)))


def datum(tokens: list[int] | None = None, **inputs: Any) -> types.Datum:
    tokens = tokens if tokens is not None else [11, 12, 13]
    return types.Datum(model_input=types.ModelInput.from_ints(tokens), loss_fn_inputs=inputs)


def ce(n: int = 3, **override: Any) -> types.Datum:
    inputs = {"target_tokens": tensor([12] * n, np.int64), "weights": tensor([1.0] * n, np.float32), **override}
    return datum([11] * n, **{k: v for k, v in inputs.items() if v is not None})


def rl(n: int = 3, **override: Any) -> types.Datum:
    inputs = {
        "target_tokens": tensor([12] * n, np.int64),
        "logprobs": tensor([-1.0] * n, np.float32),
        "advantages": tensor([0.5] * n, np.float32),
        **override,
    }
    return datum([11] * n, **{k: v for k, v in inputs.items() if v is not None})


def training(svc: SimulatedService) -> Any:
    return svc.create_lora_training_client(base_model="Qwen/Qwen3.5-4B", rank=1).result()


def rejected(call: Any) -> str:
    with pytest.raises(ServiceRuleError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and message.startswith("Tinker would reject ")
    return message


# -- forward_backward ---------------------------------------------------------------------------------

FORWARD_BACKWARD_CASES = [
    ("cross_entropy", [ce(advantages=tensor([1.0] * 3, np.float32))], None,
     "loss_fn_inputs has advantages, which it does not take; cross_entropy takes exactly target_tokens, weights"),
    ("importance_sampling", [rl(weights=tensor([1.0] * 3, np.float32))], None,
     "has weights, which it does not take; importance_sampling takes exactly target_tokens, logprobs, advantages"),
    ("ppo", [rl(advantages=None)], {"clip_low_threshold": 0.8},
     "loss_fn_inputs lacks advantages; ppo takes exactly target_tokens, logprobs, advantages"),
    ("importance_sampling", [rl(target_tokens=tensor([[12, 13]] * 3, np.int64))], None,
     "target_tokens has shape (3, 2); importance_sampling takes (N,) = (3,) (only cross_entropy takes (N, K))"),
    ("cross_entropy", [ce(target_tokens=tensor([12.0] * 3, np.float32))], None,
     "target_tokens has dtype float32; it must be int64 or int32"),
    ("cross_entropy", [ce(target_tokens=tensor([12] * 2, np.int64))], None,
     "target_tokens has shape (2,); it must be (N,) or (N, K) with N = 3, the model_input length"),
    ("cross_entropy", [ce(weights=tensor([[1.0, 0.0]] * 3, np.float32))], None,
     "weights has shape (3, 2); it must be (3,), as target_tokens"),
    ("importance_sampling", [rl(logprobs=tensor([-1, -1, -1], np.int64))], None,
     "logprobs has dtype int64; it must be float32"),
    ("cross_entropy", [ce(target_tokens=tensor([12, 300, 12], np.int64))], None,
     "target_tokens holds token id 300, not below the vocabulary size 300"),
    ("cross_entropy", [datum([11, -4, 11], target_tokens=tensor([12] * 3, np.int64), weights=tensor([1.0] * 3, np.float32))],
     None, "model_input holds the negative token id -4"),
    ("cross_entropy", [ce(n=17)], None, "model_input has 17 tokens, more than the context window of 16"),
    ("ppo", [rl(advantages=tensor([0.5, math.nan, 0.5], np.float32))], None, "advantages holds NaN or infinite values"),
    ("dpo", [ce()], None, "forward_backward(loss_fn='dpo'): the built-in losses are cross_entropy, importance_sampling, ppo, cispo"),
    ("importance_sampling", [rl()], {"clip_low_threshold": 0.8},
     "loss_fn_config has clip_low_threshold; importance_sampling takes: none"),
    ("cross_entropy", [], None, "forward_backward(cross_entropy): it holds no datums"),
]


@pytest.mark.parametrize(("loss_fn", "data", "config", "line"), FORWARD_BACKWARD_CASES)
def test_each_forward_backward_rule_refuses_its_malformed_request(loss_fn: str, data: list[types.Datum], config: Any, line: str) -> None:
    svc = service()
    client = training(svc)
    message = rejected(lambda: client.forward_backward(data, loss_fn, loss_fn_config=config))
    assert line in message
    assert [m for m, _ in client.requests] == []  # nothing was accepted


def test_well_formed_requests_of_every_loss_are_accepted() -> None:
    svc = service()
    client = training(svc)
    distill = ce(target_tokens=tensor([[12, 13]] * 3, np.int64), weights=tensor([[0.5, 0.5]] * 3, np.float32))
    for loss_fn, data, config in [
        ("cross_entropy", [ce(), distill], None),
        ("importance_sampling", [rl()], None),
        ("ppo", [rl()], {"clip_low_threshold": 0.8, "clip_high_threshold": 1.2}),
    ]:
        output = client.forward_backward(data, loss_fn, loss_fn_config=config).result()
        assert math.isfinite(output.metrics["loss:sum"])
        assert [o["logprobs"].shape for o in output.loss_fn_outputs] == [d.loss_fn_inputs["target_tokens"].shape for d in data]


def test_cross_entropy_loss_is_the_weighted_sum_of_the_pseudo_models_logprobs() -> None:
    svc = service()
    client = training(svc)
    output = client.forward_backward([ce()], "cross_entropy").result()
    expected = -sum(svc.model.logprob([11] * (i + 1), 12) for i in range(3))
    assert output.metrics["loss:sum"] == pytest.approx(expected, rel=1e-5)


# -- training client, model, optimizer ------------------------------------------------------------------


def test_lora_rank_and_model_rules() -> None:
    svc = SimulatedService(tokenizer=ByteTokenizer())
    line = rejected(lambda: svc.create_lora_training_client(base_model="Qwen/Qwen3.6-35B-A3B", rank=64))
    assert line.endswith("'Qwen/Qwen3.6-35B-A3B' takes LoRA ranks 1..32 (algorithm.params.lora_rank)")
    assert rejected(lambda: svc.create_lora_training_client(base_model="Qwen/Qwen3.5-35B-A3B", rank=8)).endswith(
        ": Tinker retired 'Qwen/Qwen3.5-35B-A3B' on 2026-06-12; its recommended replacement: Qwen/Qwen3.6-35B-A3B"
    )
    assert "takes LoRA ranks 1..128" in rejected(lambda: svc.create_lora_training_client(base_model="Qwen/Qwen3.5-4B", rank=0))
    assert "not in the catalog of models Tinker serves" in rejected(
        lambda: svc.create_lora_training_client(base_model="acme/NotAModel-1B", rank=8)
    )
    svc.create_lora_training_client(base_model="Qwen/Qwen3.5-4B", rank=128).result()
    assert svc.limits == model_limits("Qwen/Qwen3.5-4B")


def test_limits_are_the_model_catalogs(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from evsys.backends.tinker.catalog import write_cache
    from evsys.backends.tinker.models import TinkerModel

    monkeypatch.setenv("EVSYS_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("TINKER_BASE_URL", raising=False)
    assert model_limits("Qwen/Qwen3.5-4B") == ModelLimits(vocab_size=248_320, context_length=262_144, max_lora_rank=128)
    assert model_limits("nvidia/NVIDIA-Nemotron-3-Super-120B-A12B-BF16") == ModelLimits(131_072, None, 32)
    write_cache([TinkerModel("Qwen/Qwen3.5-4B", 32768)])  # the service's own list, as a run with a key caches it
    assert model_limits("Qwen/Qwen3.5-4B") == ModelLimits(vocab_size=248_320, context_length=32768, max_lora_rank=128)
    assert model_limits("Qwen/Qwen3-8B") is None  # not in the service's list
    svc = SimulatedService(tokenizer=ByteTokenizer())
    client = svc.create_lora_training_client(base_model="Qwen/Qwen3.5-4B", rank=8).result()
    sampler = client.save_weights_and_get_sampling_client().result()
    params = types.SamplingParams(max_tokens=32768)
    assert "exceeds the context window of 32768" in rejected(
        lambda: sampler.sample(prompt=types.ModelInput.from_ints([11]), num_samples=1, sampling_params=params)
    )


@pytest.mark.parametrize(
    ("adam", "line"),
    [
        ({"learning_rate": 0.0}, "learning_rate is 0.0; it must be a positive number"),
        ({"learning_rate": 1e-4, "beta1": 1.0}, "beta1 is 1.0; it must be in [0, 1)"),
        ({"learning_rate": 1e-4, "eps": 0.0}, "eps is 0.0; it must be positive"),
        ({"learning_rate": 1e-4, "grad_clip_norm": -1.0}, "weight_decay and grad_clip_norm must not be negative"),
    ],
)
def test_optimizer_rules(adam: dict[str, float], line: str) -> None:
    client = training(service())
    assert line in rejected(lambda: client.optim_step(types.AdamParams(**adam)))


# -- sampling and prompt logprobs -------------------------------------------------------------------


def sample(svc: SimulatedService, prompt: list[int] | None = None, num_samples: int = 1, **kwargs: Any) -> Any:
    sampler = svc.create_sampling_client(base_model="Qwen/Qwen3.5-4B").result()
    params = {k: kwargs.pop(k) for k in ("max_tokens", "temperature", "top_p", "top_k", "seed", "stop") if k in kwargs}
    params.setdefault("max_tokens", 4)
    return sampler.sample(
        prompt=types.ModelInput.from_ints(prompt if prompt is not None else [11, 12, 13]),
        num_samples=num_samples, sampling_params=types.SamplingParams(**params), **kwargs,
    )


@pytest.mark.parametrize(
    ("kwargs", "line"),
    [
        ({"prompt": [11] * 10, "max_tokens": 7}, "the prompt (10 tokens) plus max_tokens (7) exceeds the context window of 16"),
        ({"max_tokens": 0}, "sampling_params.max_tokens is 0; it must be at least 1"),
        ({"temperature": -0.5}, "sampling_params.temperature is -0.5; it must be at least 0"),
        ({"top_p": 0.0}, "sampling_params.top_p is 0.0; it must be in (0, 1]"),
        ({"top_k": 0}, "sampling_params.top_k is 0; it must be -1 (no limit) or at least 1"),
        ({"num_samples": 0}, "num_samples is 0; it must be at least 1"),
        ({"prompt": [11, 400]}, "the prompt holds token id 400, not below the vocabulary size 300"),
        ({"prompt": []}, "the prompt is empty"),
        ({"topk_prompt_logprobs": 3, "prompt_logprobs_last_n": 1}, "prompt_logprobs_last_n needs include_prompt_logprobs=True"),
        ({"include_prompt_logprobs": True, "prompt_logprobs_last_n": 3},
         "prompt_logprobs_last_n is 3; it must be between 1 and len(prompt) - 1 = 2"),
        ({"include_prompt_logprobs": True, "topk_prompt_logprobs": -1}, "topk_prompt_logprobs is -1; it must be in 0..300"),
    ],
)
def test_each_sampling_rule_refuses_its_malformed_request(kwargs: dict[str, Any], line: str) -> None:
    assert line in rejected(lambda: sample(service(), **kwargs))


def test_answers_are_deterministic_from_the_seed_and_depend_on_the_prompt() -> None:
    def tokens(seed: int, prompt: list[int], sampling_seed: int = 7) -> list[list[int]]:
        response = sample(service(BYTE_LIMITS, seed=seed), prompt, num_samples=3, max_tokens=12, seed=sampling_seed).result()
        return [list(s.tokens) for s in response.sequences]

    first = tokens(0, [11, 12, 13])
    assert first == tokens(0, [11, 12, 13])
    assert first != tokens(0, [11, 12, 14])
    assert first != tokens(1, [11, 12, 13])
    assert first != tokens(0, [11, 12, 13], sampling_seed=8)
    assert len({tuple(t) for t in first}) > 1  # the samples of one request differ


def test_sampled_logprobs_agree_with_the_prompt_logprobs_of_the_same_tokens() -> None:
    svc = service(BYTE_LIMITS)
    response = sample(svc, [11, 12, 13], max_tokens=6, seed=1, stop=[]).result()
    completion = list(response.sequences[0].tokens)
    assert len(completion) == 6 and response.sequences[0].stop_reason == "length"  # stop=[]: no EOS stop
    scored = sample(svc, [11, 12, 13, *completion], max_tokens=1, include_prompt_logprobs=True, topk_prompt_logprobs=5).result()
    np.testing.assert_allclose(scored.prompt_logprobs_np[3:], response.sequences[0].logprobs_np, rtol=1e-5)
    rows = scored.topk_prompt_logprobs_np
    assert rows.token_ids.shape == (9, 5) and (rows.token_ids[0] == 0).all()
    assert (np.diff(rows.logprobs[1:], axis=1) <= 0).all()  # most likely first
    assert svc.tally.tokens_scored == 8 and svc.tally.tokens_sampled == 7


def test_temperature_zero_is_greedy_and_eos_stops() -> None:
    svc = service(BYTE_LIMITS)
    response = sample(svc, [11, 12], num_samples=2, max_tokens=40, temperature=0.0).result()
    a, b = (list(s.tokens) for s in response.sequences)
    assert a == b
    for seq in response.sequences:
        assert (seq.stop_reason == "stop") == (list(seq.tokens)[-1] == ByteTokenizer.eos_token_id)


def test_resuming_restores_the_saved_weights_and_refuses_a_path_that_is_not_tinkers() -> None:
    svc = service()
    client = training(svc)
    for _ in range(2):
        client.optim_step(types.AdamParams(learning_rate=1e-4)).result()
    path = client.save_state("step-2").result().path
    resumed = svc.create_training_client_from_state_with_optimizer(path).result()
    assert resumed.version == client.version == 2
    line = rejected(lambda: svc.create_training_client_from_state_with_optimizer("outputs/run/checkpoints/final"))
    assert line.endswith("resuming from 'outputs/run/checkpoints/final': not a tinker:// path")


# -- the pseudo-model's memo, futures, and the benchmark's links ------------------------------------


def test_the_memoized_pseudo_model_answers_as_a_fresh_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from evsys.backends.tinker import pseudo_model
    from evsys.backends.tinker.pseudo_model import PseudoModel

    sequence = [11, 12, 400, 13, -1, 12, 14, 15, 11]
    warm = PseudoModel(5, 300, 2, decodable=280)
    walked = warm.along(sequence, 0, version=1)
    for i in range(len(sequence)):
        ids, logprobs = PseudoModel(5, 300, 2, decodable=280).distribution(sequence[:i], version=1)
        assert walked[i].ids.tolist() == ids.tolist() and walked[i].logprobs.tolist() == logprobs.tolist()
        assert warm.logprob(sequence[:i], 999, version=1) == walked[i].residual  # not a candidate
        assert warm.logprob(sequence[:i], int(ids[2]), version=1) == logprobs[2]
    assert warm.distribution(sequence, version=0)[0].tolist() != warm.distribution(sequence, version=1)[0].tolist()
    monkeypatch.setattr(pseudo_model, "CACHE_SIZE", 3)  # the memo starts over: the same answers
    assert [n.ids.tolist() for n in warm.along(sequence, 2, version=1)] == [n.ids.tolist() for n in walked[2:]]


def test_a_future_completes_at_its_ready_time_with_the_response() -> None:
    import time

    from evsys.backends.tinker.simulator import Latency

    sim = SimulatedService(tokenizer=ByteTokenizer(), limits=BYTE_LIMITS, seed=0, latency=Latency(sample_s=0.3, jitter=0.5, seed=4))
    client = sim.create_sampling_client(base_model="m").result()
    future = client.sample(prompt=types.ModelInput.from_ints([11, 12]), num_samples=2, sampling_params=types.SamplingParams(max_tokens=3))
    _, submitted, latency = sim.tally.drawn[-1]
    done = future.future().result()
    assert time.monotonic() >= submitted + latency  # not before the latency the service drew
    assert future.result() is done and len(done.sequences) == 2


def test_scorings_of_the_same_completion_link_to_distinct_samples_in_the_order_they_returned() -> None:
    sim = SimulatedService(tokenizer=ByteTokenizer(), limits=BYTE_LIMITS, seed=0)
    policy = sim.create_lora_training_client(base_model="m", rank=1).result().save_weights_and_get_sampling_client().result()
    greedy = types.SamplingParams(max_tokens=1, temperature=0.0)
    first, second = (policy.sample(prompt=types.ModelInput.from_ints([11, 12]), num_samples=1, sampling_params=greedy) for _ in range(2))
    [token] = first.result().sequences[0].tokens
    assert second.result().sequences[0].tokens == [token]  # the same completion twice
    teacher = sim.create_sampling_client(base_model="m").result()
    scoring = types.SamplingParams(max_tokens=1)
    for prefix in ([30], [31]):
        teacher.sample(prompt=types.ModelInput.from_ints([*prefix, token]), num_samples=1, sampling_params=scoring,
                       include_prompt_logprobs=True, topk_prompt_logprobs=2)
    samples = [i for i, (method, _, _) in enumerate(sim.tally.drawn) if method.startswith("sample:policy")]
    assert [origin for _, origin in sim.tally.links] == samples  # each sample scored once, the first one first
