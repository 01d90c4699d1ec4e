"""How far the rollout sampler is from the float32 policy, per ``rollout_weights`` (docs/performance.md).

    python benchmarks/rollout_tolerance.py int8      # or: model
    FBGEMM_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2 python benchmarks/rollout_tolerance.py int8
                                                     # the AVX2 kernels' choice on an AVX-512 machine

8 prompts x 32 tokens on the bundled SmolLM2-135M-Instruct with a random rank-1 LoRA on q_proj/v_proj.
Two measurements:

- **KL**: the 8 rollouts are sampled once by the exact float32 policy, then fed token by token
  (teacher-forced) through the sampler being measured, alone (batch 1) and all 8 left-padded together
  (batch 8); per position KL(float32 policy || sampler) in nats. Every variant sees the same tokens.
- **sampler logprobs**: ``sample``'s own logprobs (batch 8, seed 123) against one unpadded float32
  forward of prompt + rollout with the adapter on: what an importance weight ``exp(logp - sampler_logp)``
  corrects.
"""

from __future__ import annotations

import sys
import warnings

import torch

from evsys.backends.local.backend import LocalBackend
from evsys.backends.local.params import LocalBackendParams
from evsys.backends.local.resolve import BUNDLED_ALIAS
from evsys.schema.protocols import BackendSetup

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
NEW_TOKENS = 32


def _backend(weights: str) -> LocalBackend:
    backend = LocalBackend(
        BackendSetup(model_name=BUNDLED_ALIAS, lora_rank=1, seed=0),
        LocalBackendParams(device="cpu", target_modules=["q_proj", "v_proj"], rollout_weights=weights),
    )
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in backend.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.01)
    backend.eos_token_ids = frozenset()
    return backend


@torch.inference_mode()
def _policy_logprobs(backend: LocalBackend, prompt: list[int], tokens: list[int]) -> torch.Tensor:
    """float32 policy log-distributions [len(tokens), V] at the positions that predict ``tokens``."""
    logits = backend.model(input_ids=torch.tensor([prompt + tokens])).logits[0].float()
    return torch.log_softmax(logits, dim=-1)[len(prompt) - 1 : -1]


@torch.inference_mode()
def _forced(backend: LocalBackend, prompts: list[list[int]], rollouts: list[list[int]]) -> torch.Tensor:
    """The sampler's log-distributions [B, T, V] with ``rollouts`` forced, the prompts left-padded together."""
    assert backend.engines.fused is not None, "the fused engine is needed"
    decoder = backend.engines.fused.decoder
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), backend.pad_token_id, dtype=torch.long)
    valid = torch.zeros((len(prompts), width), dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, width - len(p) :] = torch.tensor(p)
        valid[b, width - len(p) :] = 1
    positions = (valid.cumsum(-1) - 1).clamp(min=0)
    steps = [decoder.start(ids, valid, positions, width + NEW_TOKENS)]
    following = positions[:, -1] + 1
    for i in range(NEW_TOKENS - 1):
        steps.append(decoder.step(torch.tensor([r[i] for r in rollouts]), following + i))
    return torch.log_softmax(torch.stack(steps, dim=1), dim=-1)


def main(weights: str) -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    backend = _backend("model")
    prompts = [backend.render_chat([{"role": "user", "content": q}]) for q in QUESTIONS]
    rollouts = [s.tokens for [s] in backend.sample(prompts, max_tokens=NEW_TOKENS, seed=7)]
    reference = [_policy_logprobs(backend, p, r) for p, r in zip(prompts, rollouts, strict=True)]
    if weights != "model":
        backend = _backend(weights)
    kl = {}
    for label, groups in (("batch 1", [[i] for i in range(len(prompts))]), ("batch 8", [list(range(len(prompts)))])):
        values = []
        for group in groups:
            forced = _forced(backend, [prompts[i] for i in group], [rollouts[i] for i in group])
            for row, i in enumerate(group):
                ref = reference[i]
                values.append((ref.exp() * (ref - forced[row])).sum(-1))
        kl[label] = torch.cat(values)
    diffs: list[float] = []
    for prompt, [s] in zip(prompts, backend.sample(prompts, max_tokens=NEW_TOKENS, seed=123), strict=True):
        logp = _policy_logprobs(backend, prompt, s.tokens)
        diffs += [a - float(logp[i, t]) for i, (a, t) in enumerate(zip(s.logprobs, s.tokens, strict=True))]
    d = torch.tensor(diffs)
    from evsys.backends.local.cpu_features import detect

    print(f"{weights}: int8 kernels for {detect().label} (7-bit activations: {detect().int8_reduce_range})")
    print(
        f"{weights}: KL(float32 policy || sampler) per token, mean (p99): "
        + ", ".join(f"{label} {v.mean():.4f} ({v.quantile(0.99):.3f})" for label, v in kl.items())
    )
    print(
        f"{weights}: sampler - float32 policy logprob over {len(d)} sampled tokens: mean {d.mean():.2e}, "
        f"mean|d| {d.abs().mean():.3g}, p99|d| {d.abs().quantile(0.99):.3g}, max|d| {d.abs().max():.3g}, "
        f"mean exp(-d) {torch.exp(-d).mean():.4f}"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "int8")
