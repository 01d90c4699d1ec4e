"""How far ``sample``'s logprobs are from the float32 policy's, per ``rollout_weights`` (docs/performance.md).

    python benchmarks/rollout_tolerance.py int8      # or: model

8 prompts x 32 sampled tokens on the bundled SmolLM2-135M-Instruct with a random rank-1 LoRA on
q_proj/v_proj; the reference is one unpadded float32 forward of prompt + rollout with the adapter on.
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


def main(weights: str) -> None:
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
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
    prompts = [backend.render_chat([{"role": "user", "content": q}]) for q in QUESTIONS]
    diffs: list[float] = []
    for prompt, [s] in zip(prompts, backend.sample(prompts, max_tokens=32, seed=123), strict=True):
        with torch.no_grad():
            logits = backend.model(input_ids=torch.tensor([prompt + s.tokens])).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)
        diffs += [
            a - float(logp[len(prompt) + i - 1, t]) for i, (a, t) in enumerate(zip(s.logprobs, s.tokens, strict=True))
        ]
    d = torch.tensor(diffs)
    print(
        f"{weights}: sampler - float32 policy logprob over {len(d)} tokens: mean {d.mean():.2e}, "
        f"mean|d| {d.abs().mean():.3g}, p99|d| {d.abs().quantile(0.99):.3g}, max|d| {d.abs().max():.3g}, "
        f"mean exp(-d) {torch.exp(-d).mean():.4f}"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "int8")
