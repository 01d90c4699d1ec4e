"""Every rollout path other than the float32 policy stays within a stated tolerance of it, per CPU kind.

The int8 path runs different kernels per CPU kind (:mod:`evsys.backends.local.cpu_features`): fbgemm's
AVX-512 VNNI kernels with 8-bit activations, or its AVX2 kernels with 7-bit activations. Each kind is
measured in a fresh interpreter whose kernels are capped to that kind (``FBGEMM_ENABLE_INSTRUCTIONS``,
``ATEN_CPU_CAPABILITY``), so an AVX-512 VNNI machine runs the AVX2 kernels too; a kind this CPU cannot
run is skipped with the reason. The measure is the teacher-forced KL(float32 policy || sampler) per
token over sampled rollouts (tiny random Llama, random LoRA on every linear). The bundled model's
figures are ``benchmarks/rollout_tolerance.py``'s (docs/performance.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evsys.backends.local.cpu_features import detect, int8_available

#: stated tolerance of the int8 sampler on the tiny test model: mean and max KL per token, nats
MEAN_KL, MAX_KL = 0.005, 0.05  # measured: AVX2 kernels 0.0016 / 0.010, AVX-512 VNNI 0.0008 / 0.0052
#: kernel caps that make a process run each CPU kind's int8 kernels
KIND_ENV = {
    "avx2": {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
    "avx512-vnni": {},
}


def teacher_forced_kl(model_dir: str) -> dict[str, object]:
    """KL per token of the int8 sampler against the float32 policy, over 4 sampled rollouts."""
    from evsys.backends.local.backend import LocalBackend
    from evsys.backends.local.params import LocalBackendParams
    from evsys.schema.protocols import BackendSetup

    torch.set_num_threads(1)
    backend = LocalBackend(
        BackendSetup(model_name=model_dir, lora_rank=2, seed=0),
        LocalBackendParams(device="cpu", rollout_weights="int8"),
    )
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in backend.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    questions = ["Name a colour.", "What is 2 + 2?", "Say hello.", "Count to three."]
    prompts = [backend.render_chat([{"role": "user", "content": q}]) for q in questions]
    values = []
    with torch.inference_mode():
        for prompt, [rollout] in zip(prompts, backend.sample(prompts, max_tokens=12, seed=0), strict=True):
            tokens = rollout.tokens
            logits = backend.model(input_ids=torch.tensor([prompt + tokens])).logits[0].float()
            policy = torch.log_softmax(logits, dim=-1)[len(prompt) - 1 : -1]
            decoder = backend.engines.fused.decoder
            assert decoder is not None and decoder.int8
            ids = torch.tensor([prompt])
            steps = [
                decoder.start(ids, torch.ones_like(ids), torch.arange(len(prompt))[None], len(prompt) + len(tokens))
            ]
            for i, token in enumerate(tokens[:-1]):
                steps.append(decoder.step(torch.tensor([token]), torch.tensor([len(prompt) + i])))
            decoder.finish()
            sampler = torch.log_softmax(torch.cat(steps).float(), dim=-1)
            values.append((policy.exp() * (policy - sampler)).sum(-1))
    kl = torch.cat(values)
    return {
        "kind": detect().kind,
        "reduce_range": detect().int8_reduce_range,
        "mean": float(kl.mean()),
        "max": float(kl.max()),
    }


def _skip_reason(kind: str) -> str | None:
    here = detect()
    if not int8_available(torch.device("cpu")):
        return f"no int8 kernels here ({here.label} CPU or a torch without fbgemm)"
    if kind == "avx512-vnni" and here.kind != "avx512-vnni":
        return f"the AVX-512 VNNI kernels need an AVX-512 VNNI CPU (this one: {here.label})"
    return None


@pytest.mark.parametrize("kind", list(KIND_ENV))
def test_int8_rollouts_stay_within_the_stated_kl_of_the_float_policy(tiny_dir: Path, kind: str) -> None:
    reason = _skip_reason(kind)
    if reason:
        pytest.skip(reason)
    env = {k: v for k, v in os.environ.items() if k not in ("FBGEMM_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY")}
    env.update(KIND_ENV[kind])
    out = subprocess.run(
        [sys.executable, __file__, str(tiny_dir)], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\n[int8 rollouts, {kind} kernels] teacher-forced KL per token: {result}")
    assert result["kind"] == kind and result["reduce_range"] == (kind == "avx2")
    assert 0 < result["mean"] < MEAN_KL and result["max"] < MAX_KL, result


if __name__ == "__main__":
    print(json.dumps(teacher_forced_kl(sys.argv[1])))
