"""The local backend on a tiny random Llama (built offline): sampling, teacher top-k, losses, optimizer, checkpoints."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from evsys.backends.local.backend import LocalBackend
from evsys.backends.local.loading import decoder_layers
from evsys.backends.local.params import LocalBackendParams
from evsys.schema.errors import EvsysError
from evsys.schema.protocols import Backend, BackendSetup, Datum

RANK = 4


pytestmark = pytest.mark.usefixtures("one_thread")


def make_backend(model_dir: Path, seed: int = 0, run_dir: Path | None = None, **params: object) -> LocalBackend:
    setup = BackendSetup(model_name=str(model_dir), lora_rank=RANK, seed=seed, run_dir=run_dir)
    params.setdefault("rollout_weights", "model")  # these tests check the exact float path; auto: test_local_auto_settings
    return LocalBackend(setup, LocalBackendParams(**params))


@pytest.fixture
def backend(tiny_dir: Path) -> LocalBackend:
    b = make_backend(tiny_dir)
    yield b
    b.close()


def randomize_lora(backend: LocalBackend, seed: int = 1, std: float = 0.05) -> None:
    """Make the adapter non-zero (peft starts lora_B at zero, i.e. the adapted model equals the base)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in backend.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * std)


def lora_params(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if "lora_" in n}


def policy_logprobs(model: torch.nn.Module, seq: list[int]) -> torch.Tensor:
    """log p(. | seq[:i]) for every i, from one unpadded forward pass: shape [len(seq), V]."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([seq])).logits[0].float()
    return torch.log_softmax(logits, dim=-1)


def greedy_reference(model: torch.nn.Module, prompt: list[int], max_tokens: int, eos: set[int]) -> list[int]:
    """Greedy decoding without batching, padding or KV cache."""
    seq, out = list(prompt), []
    for _ in range(max_tokens):
        token = int(policy_logprobs(model, seq)[-1].argmax())
        out.append(token)
        seq.append(token)
        if token in eos:
            break
    return out


PROMPTS = [[1, 87, 85, 71, 84, 201, 74, 75], [1, 67, 201, 90], [40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50]]


def test_is_a_backend_and_renders_chat(backend: LocalBackend) -> None:
    assert isinstance(backend, Backend)
    ids = backend.render_chat([{"role": "user", "content": "hi"}])
    text = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert ids == backend.tokenizer.encode(text, add_special_tokens=False)
    suffix = backend.tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)
    assert backend.render_chat([{"role": "user", "content": "hi"}], add_generation_prompt=False) + suffix == ids
    assert backend.tokenizer.pad_token_id == backend.tokenizer.eos_token_id  # as in SmolLM2


def test_sample_shapes_and_logprobs_match_a_forward_pass(backend: LocalBackend) -> None:
    randomize_lora(backend)
    out = backend.sample(PROMPTS, n=3, max_tokens=12, temperature=1.0, seed=0)
    assert [len(group) for group in out] == [3, 3, 3]
    eos = backend.eos_token_ids
    for prompt, group in zip(PROMPTS, out, strict=True):
        for s in group:
            assert 1 <= len(s.tokens) <= 12 and len(s.logprobs) == len(s.tokens)
            assert not any(t in eos for t in s.tokens[:-1])
            if s.tokens[-1] in eos:
                assert s.stop_reason == "stop"
                assert s.text == backend.tokenizer.decode(s.tokens[:-1], skip_special_tokens=True)
            else:
                assert s.stop_reason == "length" and len(s.tokens) == 12
                assert s.text == backend.tokenizer.decode(s.tokens, skip_special_tokens=True)
            # logprobs: log p(token) under the current (adapted) policy at temperature 1, unpadded, no cache
            ref = policy_logprobs(backend.model, prompt + s.tokens)
            expected = [float(ref[len(prompt) + i - 1, t]) for i, t in enumerate(s.tokens)]
            assert s.logprobs == pytest.approx(expected, abs=1e-4)
    # temperature does not change what the logprobs mean (Tinker's convention)
    hot = backend.sample(PROMPTS[:1], n=2, max_tokens=6, temperature=0.5, seed=3)[0]
    for s in hot:
        ref = policy_logprobs(backend.model, PROMPTS[0] + s.tokens)
        assert s.logprobs == pytest.approx(
            [float(ref[len(PROMPTS[0]) + i - 1, t]) for i, t in enumerate(s.tokens)], abs=1e-4
        )


def test_sample_is_reproducible_with_a_seed(tiny_dir: Path) -> None:
    a, b = make_backend(tiny_dir, seed=5), make_backend(tiny_dir, seed=5)
    first = a.sample(PROMPTS, n=2, max_tokens=8, seed=11)
    assert first == a.sample(PROMPTS, n=2, max_tokens=8, seed=11)
    assert first != a.sample(PROMPTS, n=2, max_tokens=8, seed=12)
    # without a seed, the backend's own generator (seeded by setup.seed) makes whole runs reproducible
    assert a.sample(PROMPTS, n=2, max_tokens=8) == b.sample(PROMPTS, n=2, max_tokens=8)


def test_greedy_batched_equals_unbatched_reference_and_stops_at_eos(backend: LocalBackend) -> None:
    randomize_lora(backend, seed=2)
    model, eos_id = backend.model, backend.tokenizer.eos_token_id
    eos = set(backend.eos_token_ids)
    # Make EOS likely mid-sequence: its output row copies (and outbids) the row of a token greedy picks.
    picked = greedy_reference(model, PROMPTS[0], 3, eos)[2]
    with torch.no_grad():
        head = backend._causal_lm.get_output_embeddings().weight
        head[eos_id] = head[picked] * 1.5
    refs = [greedy_reference(model, p, 16, eos) for p in PROMPTS]
    assert any(r[-1] in eos and len(r) < 16 for r in refs), refs
    assert len({len(r) for r in refs}) > 1, refs  # rows finish at different steps (the batch shrinks)
    out = backend.sample(PROMPTS, n=2, max_tokens=16, temperature=0)
    for ref, group in zip(refs, out, strict=True):
        for s in group:
            assert s.tokens == ref
            if ref[-1] in eos:
                assert s.stop_reason == "stop" and s.text == backend.tokenizer.decode(
                    ref[:-1], skip_special_tokens=True
                )
            else:
                assert s.stop_reason == "length"
    # micro-batching the rollout gives the same answers
    small = make_backend(Path(backend.model_dir), micro_batch_size=1)
    small.model.load_state_dict(backend.model.state_dict())
    small_out = small.sample(PROMPTS, n=2, max_tokens=16, temperature=0)
    for got, want in zip([s for g in small_out for s in g], [s for g in out for s in g], strict=True):
        assert (got.tokens, got.text, got.stop_reason) == (want.tokens, want.text, want.stop_reason)
        assert got.logprobs == pytest.approx(want.logprobs, abs=1e-5)


def test_stop_strings_and_max_tokens(backend: LocalBackend) -> None:
    prompt = PROMPTS[2]
    eos = set(backend.eos_token_ids)
    ref = greedy_reference(backend.model, prompt, 24, eos)
    ref = ref[:-1] if ref[-1] in eos else ref
    decode = backend.tokenizer.decode
    full = decode(ref, skip_special_tokens=True)
    stop = next(ch for ch in full[4:] if ch.isprintable() and ch != "\ufffd")
    # expected: the first step whose decoded text contains the stop string; text cut before it
    step = next(i for i in range(len(ref)) if stop in decode(ref[: i + 1], skip_special_tokens=True))
    text = decode(ref[: step + 1], skip_special_tokens=True)
    [[s]] = backend.sample([prompt], max_tokens=24, temperature=0, stop=["\x00never", stop])
    assert s.stop_reason == "stop"
    assert s.tokens == ref[: step + 1]
    assert s.text == text[: text.index(stop)]
    assert stop not in s.text
    [[short]] = backend.sample([prompt], max_tokens=3, temperature=0)
    assert short.tokens == ref[:3] and short.stop_reason == "length" and len(short.logprobs) == 3


def test_sample_rejects_bad_arguments(backend: LocalBackend) -> None:
    with pytest.raises(EvsysError, match="empty prompt"):
        backend.sample([[]])
    with pytest.raises(EvsysError, match="max_tokens"):
        backend.sample([[1]], max_tokens=0)


def fresh_base_topk(model_dir: Path, seq: list[int], start: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    logp = policy_logprobs(model, seq)[start - 1 : len(seq) - 1]
    values, ids = logp.topk(k, dim=-1)
    return ids, values


@pytest.mark.parametrize("params", [{}, {"micro_batch_size": 1, "logits_chunk_size": 3}])
def test_topk_is_the_frozen_base_model(tiny_dir: Path, params: dict[str, object]) -> None:
    backend = make_backend(tiny_dir, **params)
    randomize_lora(backend)
    seqs = [PROMPTS[0] + [60, 61, 62], PROMPTS[1], PROMPTS[2]]
    starts = [3, 1, 11]
    k = 5
    out = backend.topk_logprobs(seqs, k=k, from_position=starts)
    assert len(out) == 3
    assert out[2].token_ids == [] and out[2].logprobs == []  # from_position == len(s): nothing asked
    for seq, start, got in zip(seqs[:2], starts[:2], out[:2], strict=True):
        ids, values = fresh_base_topk(tiny_dir, seq, start, k)
        assert len(got.token_ids) == len(seq) - start and all(len(row) == k for row in got.token_ids)
        assert got.token_ids == ids.tolist()
        assert torch.allclose(torch.tensor(got.logprobs), values, atol=1e-5)
        # the adapted policy is a different distribution
        adapted = policy_logprobs(backend.model, seq)[start - 1 : len(seq) - 1]
        assert (adapted.gather(1, ids) - values).abs().max() > 1e-3
    # one from_position for all, and the adapter is back on afterwards
    same = backend.topk_logprobs(seqs[:2], k=k, from_position=3)
    assert same[0].token_ids == out[0].token_ids
    assert any(p.abs().sum() > 0 for n, p in backend.model.named_parameters() if "lora_B" in n)
    assert backend.model.active_adapters == ["default"]
    with pytest.raises(ValueError, match="from_position"):
        backend.topk_logprobs([[1, 2]], k=2, from_position=0)
    backend.close()


@pytest.mark.parametrize("params", [{}, {"micro_batch_size": 1, "logits_chunk_size": 3}])
def test_compute_logprobs_is_exact_under_the_base_model_and_the_policy(tiny_dir: Path, params: dict[str, object]) -> None:
    backend = make_backend(tiny_dir, **params)
    randomize_lora(backend)
    seqs = [PROMPTS[0] + [60, 61, 62], PROMPTS[1], PROMPTS[2]]
    starts = [3, 1, 11]
    base = backend.compute_logprobs(seqs, starts, base=True)
    policy = backend.compute_logprobs(seqs, starts, base=False)
    assert base[2] == [] and policy[2] == []  # from_position == len(s): nothing asked
    fresh = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    for seq, start, got_base, got_policy in zip(seqs[:2], starts[:2], base[:2], policy[:2], strict=True):
        targets = torch.tensor(seq[start:])[:, None]
        want_base = policy_logprobs(fresh, seq)[start - 1 : len(seq) - 1].gather(1, targets).squeeze(1)
        want_policy = policy_logprobs(backend.model, seq)[start - 1 : len(seq) - 1].gather(1, targets).squeeze(1)
        assert torch.allclose(torch.tensor(got_base), want_base, atol=1e-5)
        assert torch.allclose(torch.tensor(got_policy), want_policy, atol=1e-5)
        assert (want_base - want_policy).abs().max() > 1e-3  # the adapter matters, and was off for base
    # agrees with the teacher's top-k wherever the token is in it; one from_position for all works
    top = backend.topk_logprobs(seqs[:1], k=40, from_position=3)[0]
    for offset, (ids, lps) in enumerate(zip(top.token_ids, top.logprobs, strict=True)):
        token = seqs[0][3 + offset]
        if token in ids:
            assert lps[ids.index(token)] == pytest.approx(base[0][offset], abs=1e-5)
    assert backend.compute_logprobs(seqs[:1], 3)[0] == pytest.approx(base[0], abs=1e-6)
    assert backend.model.active_adapters == ["default"]
    with pytest.raises(ValueError, match="compute_logprobs from_position"):
        backend.compute_logprobs([[1, 2]], 0)
    backend.close()


def make_nk_batch(vocab: int, k: int = 3, seed: int = 0) -> list[Datum]:
    gen = torch.Generator().manual_seed(seed)
    batch = []
    for n in (9, 5):
        tokens = torch.randint(3, vocab, (n,), generator=gen).tolist()
        targets = torch.randint(0, vocab, (n, k), generator=gen)
        weights = torch.softmax(torch.randn(n, k, generator=gen), dim=-1)
        weights[:2] = 0  # "prompt" positions carry no loss
        batch.append(Datum(input_tokens=tokens, target_tokens=targets.tolist(), weights=weights.tolist()))
    return batch


def reference_grads(backend: LocalBackend, batch: list[Datum], loss_of) -> tuple[float, dict[str, torch.Tensor]]:
    """Plain torch on a copy of the adapted model: full logits, the loss by hand, backward."""
    model = copy.deepcopy(backend.model)
    model.zero_grad(set_to_none=True)
    total = torch.zeros(())
    for d in batch:
        logp = torch.log_softmax(model(input_ids=torch.tensor([d.input_tokens])).logits[0].float(), dim=-1)
        total = total + loss_of(d, logp)
    total.backward()
    return float(total), {n: p.grad.clone() for n, p in lora_params(model).items()}


def ce_loss(d: Datum, logp: torch.Tensor) -> torch.Tensor:
    targets = torch.tensor(d.target_tokens)
    weights = torch.tensor(d.weights, dtype=torch.float32)
    if targets.dim() == 1:
        targets, weights = targets[:, None], weights[:, None]
    return -(weights * logp.gather(1, targets)).sum()


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"micro_batch_size": 1, "logits_chunk_size": 4},
        {"gradient_checkpointing": True},
        {"gradient_checkpointing": 1},  # the first layer recomputed, the second keeps its activations
    ],
)
def test_cross_entropy_nk_gradient_equals_reference(tiny_dir: Path, params: dict[str, object]) -> None:
    backend = make_backend(tiny_dir, **params)
    randomize_lora(backend)
    batch = make_nk_batch(len(backend.tokenizer))
    ref_loss, ref_grads = reference_grads(backend, batch, ce_loss)
    result = backend.forward_backward(batch, "cross_entropy")
    assert result.loss_sum == pytest.approx(ref_loss, rel=1e-5)
    assert result.metrics["loss:sum"] == result.loss_sum
    assert result.metrics["tokens"] == 7 + 3  # positions with a non-zero weight
    for name, param in lora_params(backend.model).items():
        assert torch.allclose(param.grad, ref_grads[name], atol=1e-5, rtol=1e-4), name
    # gradients accumulate until optim_step
    backend.forward_backward(batch, "cross_entropy")
    for name, param in lora_params(backend.model).items():
        assert torch.allclose(param.grad, 2 * ref_grads[name], atol=1e-5, rtol=1e-4), name
    backend.close()


@pytest.mark.parametrize("setting", [True, 1, 0, False])
def test_gradient_checkpointing_covers_the_layers_asked_for(tiny_dir: Path, setting: bool | int) -> None:
    backend = make_backend(tiny_dir, gradient_checkpointing=setting)
    layers = list(backend.policy.decoder.layers)
    assert decoder_layers(backend._causal_lm) == layers
    checkpointed = [getattr(layer, "gradient_checkpointing", False) is True for layer in layers]
    want = len(layers) if setting is True else int(setting)
    assert checkpointed == [i < want for i in range(len(layers))]
    with backend.policy.training_mode(0.0):  # transformers checkpoints a layer only while it is in training mode
        assert [layer.training for layer in layers] == checkpointed
    # a checkpointed layer runs its attention twice in a step (the second time to recompute for the backward)
    calls = [0] * len(layers)
    for i, layer in enumerate(layers):
        layer.self_attn.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    seq = PROMPTS[0] + [70, 71, 72]
    backend.forward_backward([Datum(seq[:-1], seq[1:], [1.0] * (len(seq) - 1))], "cross_entropy")
    assert calls == [2 if c else 1 for c in checkpointed]
    backend.close()


def test_gradient_checkpointing_beyond_the_model_is_refused(tiny_dir: Path) -> None:
    with pytest.raises(EvsysError, match=r"gradient_checkpointing 9 exceeds the 2 decoder layers"):
        make_backend(tiny_dir, gradient_checkpointing=9)


def test_a_layer_count_needs_layers_that_checkpoint_one_by_one(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an architecture that checkpoints in its model loop (no per-layer switch) can do all layers, not N
    from transformers.modeling_layers import GradientCheckpointingLayer
    from transformers.modeling_utils import PreTrainedModel

    monkeypatch.delattr(GradientCheckpointingLayer, "gradient_checkpointing")
    monkeypatch.setattr(PreTrainedModel, "activation_checkpointing_enable", lambda self, **kwargs: None, raising=False)
    with pytest.raises(EvsysError, match=r"gradient_checkpointing 1: .* checkpoints all its layers or none"):
        make_backend(tiny_dir, gradient_checkpointing=1)


def test_cross_entropy_with_n_targets(backend: LocalBackend) -> None:
    randomize_lora(backend)
    seq = PROMPTS[0] + [70, 71, 72, 73]
    datum = Datum(input_tokens=seq[:-1], target_tokens=seq[1:], weights=[0.0] * 7 + [1.0] * 4)
    ref_loss, ref_grads = reference_grads(backend, [datum], ce_loss)
    result = backend.forward_backward([datum], "cross_entropy")
    assert result.loss_sum == pytest.approx(ref_loss, rel=1e-5)
    for name, param in lora_params(backend.model).items():
        assert torch.allclose(param.grad, ref_grads[name], atol=1e-5, rtol=1e-4), name


def rl_batch(backend: LocalBackend, seed: int = 0) -> list[Datum]:
    gen = torch.Generator().manual_seed(seed)
    batch = []
    for prompt in PROMPTS[:2]:
        seq = prompt + torch.randint(3, 200, (6,), generator=gen).tolist()
        inputs, targets = seq[:-1], seq[1:]
        logp = policy_logprobs(backend.model, inputs).gather(1, torch.tensor(targets)[:, None]).squeeze(1)
        sampler = (logp + 0.3 * torch.randn(len(inputs), generator=gen)).tolist()  # slightly off-policy
        advantages = torch.randn(len(inputs), generator=gen)
        advantages[: len(prompt) - 1] = 0  # prompt positions
        # what GRPO sends, Tinker's RL inputs: no weights, the prompt masked by advantage 0
        batch.append(Datum(inputs, targets, logprobs=sampler, advantages=advantages.tolist()))
    return batch


@pytest.mark.parametrize("loss_fn", ["importance_sampling", "ppo"])
def test_rl_losses_equal_reference(backend: LocalBackend, loss_fn: str) -> None:
    randomize_lora(backend)
    batch = rl_batch(backend)
    low, high = 0.9, 1.1

    def loss_of(d: Datum, logp: torch.Tensor) -> torch.Tensor:
        target_logp = logp.gather(1, torch.tensor(d.target_tokens)[:, None]).squeeze(1)
        ratio = torch.exp(target_logp - torch.tensor(d.logprobs))
        adv = torch.tensor(d.advantages)
        if loss_fn == "importance_sampling":
            return -(ratio * adv).sum()
        return -torch.minimum(ratio * adv, torch.clamp(ratio, low, high) * adv).sum()

    ref_loss, ref_grads = reference_grads(backend, batch, loss_of)
    config = {"clip_low_threshold": low, "clip_high_threshold": high} if loss_fn == "ppo" else None
    result = backend.forward_backward(batch, loss_fn, config)  # type: ignore[arg-type]
    assert result.loss_sum == pytest.approx(ref_loss, rel=1e-5, abs=1e-6)
    if loss_fn == "ppo":
        assert 0 < result.metrics["clip:fraction"] < 1
    for name, param in lora_params(backend.model).items():
        assert torch.allclose(param.grad, ref_grads[name], atol=1e-5, rtol=1e-4), name


def test_forward_backward_rejects_bad_datums(backend: LocalBackend) -> None:
    with pytest.raises(EvsysError, match="unknown loss_fn"):
        backend.forward_backward([], "kl")  # type: ignore[arg-type]
    with pytest.raises(EvsysError, match=r"batch\[0\]: target_tokens"):
        backend.forward_backward([Datum([1, 2, 3], [2, 3], [1, 1])], "cross_entropy")
    with pytest.raises(EvsysError, match="needs the sampler's logprobs"):
        backend.forward_backward([Datum([1, 2], [2, 3], [1, 1])], "ppo")
    with pytest.raises(EvsysError, match="cross_entropy' needs weights"):
        backend.forward_backward([Datum([1, 2], [2, 3], logprobs=[0, 0], advantages=[1, 1])], "cross_entropy")
    assert backend.forward_backward([Datum([1, 2], [2, 3], [0, 0])], "cross_entropy").loss_sum == 0.0


def test_optim_step_changes_only_lora_weights(backend: LocalBackend) -> None:
    randomize_lora(backend)
    before = {n: t.clone() for n, t in backend.model.state_dict().items()}
    backend.forward_backward(make_nk_batch(len(backend.tokenizer)), "cross_entropy")
    metrics = backend.optim_step(learning_rate=1e-2, weight_decay=0.01, grad_clip=1.0)
    assert metrics["grad_norm"] > 0 and metrics["learning_rate"] == 1e-2
    after = backend.model.state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all("lora_" in n for n in changed)
    assert any("lora_A" in n for n in changed) and any("lora_B" in n for n in changed)
    assert all(p.grad is None for p in lora_params(backend.model).values())  # cleared


def train_two_steps(backend: LocalBackend) -> None:
    for seed in (0, 1):
        backend.forward_backward(make_nk_batch(len(backend.tokenizer), seed=seed), "cross_entropy")
        backend.optim_step(learning_rate=1e-2, grad_clip=1.0)


def test_checkpoint_round_trip(tiny_dir: Path, tmp_path: Path) -> None:
    a = make_backend(tiny_dir, run_dir=tmp_path / "run")
    train_two_steps(a)
    path = a.save_checkpoint("step-2")
    assert Path(path) == tmp_path / "run" / "checkpoints" / "step-2"
    assert {p.name for p in Path(path).iterdir()} >= {
        "adapter_config.json",
        "adapter_model.safetensors",
        "training_state.pt",
    }
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step-2"]  # no temp leftovers
    assert a.save_checkpoint("step-2") == path  # overwriting works

    b = make_backend(tiny_dir, seed=9)  # a different LoRA init, replaced by the checkpoint
    b.load_checkpoint(path)
    seq = PROMPTS[0] + [60, 61, 62]
    assert torch.equal(policy_logprobs(a.model, seq), policy_logprobs(b.model, seq))
    state_a, state_b = a._optimizer.state_dict(), b._optimizer.state_dict()
    assert state_a["param_groups"] == state_b["param_groups"]
    for key, value in state_a["state"].items():
        for field, tensor in value.items():
            assert torch.equal(tensor, state_b["state"][key][field]), (key, field)
    # training continues identically, and sampling RNG state came along
    assert a.sample([PROMPTS[0]], n=2, max_tokens=5) == b.sample([PROMPTS[0]], n=2, max_tokens=5)
    for backend in (a, b):
        backend.forward_backward(make_nk_batch(len(backend.tokenizer), seed=2), "cross_entropy")
        backend.optim_step(learning_rate=1e-2, grad_clip=1.0)
    for (name, pa), pb in zip(lora_params(a.model).items(), lora_params(b.model).values(), strict=True):
        assert torch.allclose(pa, pb, atol=1e-7), name

    # a plain peft + transformers reload gives the same logits
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32), path)
    c = make_backend(tiny_dir)
    c.load_checkpoint(path)
    assert torch.allclose(policy_logprobs(plain, seq), policy_logprobs(c.model, seq), atol=1e-6)
    for backend in (a, b, c):
        backend.close()


def test_load_checkpoint_errors(tiny_dir: Path, tmp_path: Path) -> None:
    a = make_backend(tiny_dir, run_dir=tmp_path)
    with pytest.raises(EvsysError, match="not a local-backend checkpoint"):
        a.load_checkpoint(str(tmp_path / "nope"))
    path = a.save_checkpoint("s")
    other = LocalBackend(BackendSetup(model_name=str(tiny_dir), lora_rank=RANK + 1), LocalBackendParams())
    with pytest.raises(EvsysError, match="LoRA rank 4"):
        other.load_checkpoint(path)
    with pytest.raises(EvsysError, match="plain file name"):
        a.save_checkpoint("../x")


def test_unknown_target_modules_is_one_line_error(tiny_dir: Path) -> None:
    with pytest.raises(EvsysError, match="all-linear") as info:
        make_backend(tiny_dir, target_modules=["c_attn"])
    assert "\n" not in str(info.value)
    assert make_backend(tiny_dir, target_modules="all-linear").model is not None
