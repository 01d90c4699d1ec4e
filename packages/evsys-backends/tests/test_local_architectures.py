"""Every architecture through the local backend: tiny random llama, qwen2, qwen3, mistral, gemma2, phi3 and gpt2.

Each case loads a two-layer model built from a config (byte-level vocabulary of 259 tokens), samples
through the default library engine (``rollout_engine: transformers``), scores, trains one step with
``gradient_checkpointing: 1`` and round-trips a checkpoint. The architectures the fused engine runs
(llama, qwen2, mistral) are also checked for equality between the two engines.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from evsys.backends.local.backend import LocalBackend
from evsys.backends.local.loading import decoder_layers
from evsys.backends.local.params import LocalBackendParams
from evsys.backends.local.testing import ARCHITECTURES, build_tiny_model_dir
from evsys.schema.protocols import BackendSetup, Datum

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = [[1, 87, 85, 71, 84, 201, 74, 75], [40, 41, 42, 43]]
#: architectures whose module names are not Llama's q/k/v/o/gate/up/down_proj
ALL_LINEAR = {"phi3", "gpt2"}
FUSED = ("llama", "qwen2", "mistral")


@pytest.fixture(scope="session")
def arch_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-architectures")
    return {a: build_tiny_model_dir(root / a, architecture=a, seed=1) for a in ARCHITECTURES}


def make(model_dir: Path, architecture: str, tmp: Path | None = None, **params: object) -> LocalBackend:
    if architecture in ALL_LINEAR:
        params.setdefault("target_modules", "all-linear")
    setup = BackendSetup(model_name=str(model_dir), lora_rank=2, seed=0, run_dir=str(tmp) if tmp else None)
    return LocalBackend(setup, LocalBackendParams(device="cpu", **params))  # type: ignore[arg-type]


def randomize_lora(backend: LocalBackend, seed: int = 3) -> None:
    """Non-zero LoRA B matrices, so the adapter changes the policy (peft starts them at zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in backend.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.3)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_architecture_samples_scores_trains_and_checkpoints(
    arch_dirs: dict[str, Path], architecture: str, tmp_path: Path
) -> None:
    backend = make(arch_dirs[architecture], architecture, tmp_path, rollout_engine="transformers", gradient_checkpointing=1)
    randomize_lora(backend)

    # gradient_checkpointing: 1 found the decoder stack (GPT-2's is `.h`) and checkpoints its first layer only
    layers = decoder_layers(backend._causal_lm)
    assert len(layers) == 2
    assert [getattr(layer, "gradient_checkpointing", False) for layer in layers] == [True, False]

    # sampling: reproducible per seed; sampler logprobs are the policy's (adapter on) at temperature 1
    groups = backend.sample(PROMPTS, n=2, max_tokens=6, temperature=1.0, seed=5)
    again = backend.sample(PROMPTS, n=2, max_tokens=6, temperature=1.0, seed=5)
    assert [[s.tokens for s in g] for g in groups] == [[s.tokens for s in g] for g in again]
    for prompt, group in zip(PROMPTS, groups, strict=True):
        for s in group:
            assert 1 <= len(s.tokens) <= 6 and len(s.logprobs) == len(s.tokens)
            assert s.stop_reason == ("stop" if s.tokens[-1] in backend.eos_token_ids else "length")
            [policy] = backend.compute_logprobs([prompt + s.tokens], from_position=len(prompt), base=False)
            assert s.logprobs == pytest.approx(policy, abs=1e-4)
    [[greedy]] = backend.sample([PROMPTS[0]], max_tokens=4, temperature=0.0)
    [policy] = backend.compute_logprobs([PROMPTS[0] + greedy.tokens], from_position=len(PROMPTS[0]), base=False)
    assert greedy.logprobs == pytest.approx(policy, abs=1e-4)

    # teacher scoring: the base model (adapter off) differs from the policy
    seq = PROMPTS[0] + [70, 71, 72, 73]
    [top] = backend.topk_logprobs([seq], k=3, from_position=len(PROMPTS[0]))
    assert len(top.token_ids) == 4 and all(len(row) == 3 for row in top.token_ids)
    base = backend.compute_logprobs([seq], from_position=len(PROMPTS[0]), base=True)[0]
    before = backend.compute_logprobs([seq], from_position=len(PROMPTS[0]), base=False)[0]
    assert base != pytest.approx(before, abs=1e-6)

    # one training step moves the policy toward the targets
    datum = Datum(seq[:-1], seq[1:], [0.0] * (len(PROMPTS[0]) - 1) + [1.0] * 4)
    result = backend.forward_backward([datum], "cross_entropy")
    assert result.metrics["tokens"] == 4 and result.loss_sum == pytest.approx(-sum(before), rel=1e-4)
    saved = backend.save_checkpoint("step0")
    stats = backend.optim_step(learning_rate=1e-3)
    assert stats["grad_norm"] > 0
    after = backend.compute_logprobs([seq], from_position=len(PROMPTS[0]), base=False)[0]
    assert sum(after) > sum(before)

    # the checkpoint brings the saved policy back
    backend.load_checkpoint(saved)
    restored = backend.compute_logprobs([seq], from_position=len(PROMPTS[0]), base=False)[0]
    assert restored == pytest.approx(before, abs=1e-6)
    backend.close()


@pytest.mark.parametrize("architecture", FUSED)
def test_fused_engine_equals_the_transformers_engine(
    arch_dirs: dict[str, Path], architecture: str, assert_same_rollouts: Callable[..., None]
) -> None:
    """Same tokens under greedy and under the same seeded draws; logprobs within 1e-5 absolute or relative
    (float32 rounding: the two engines sum the same products in different orders)."""
    fused = make(arch_dirs[architecture], architecture, rollout_engine="fused", rollout_weights="model")
    library = make(arch_dirs[architecture], architecture, rollout_engine="transformers")
    randomize_lora(fused)
    library.model.load_state_dict(fused.model.state_dict())
    for temperature in (0.0, 1.0, 0.7):
        a = fused.sample(PROMPTS, n=3, max_tokens=8, temperature=temperature, seed=11)
        b = library.sample(PROMPTS, n=3, max_tokens=8, temperature=temperature, seed=11)
        assert_same_rollouts(a, b, rel=1e-5)
    assert fused.engines.fused is not None and fused.engines.fused.built
    assert library.engines.fused is None
    fused.close()
    library.close()


def test_auto_picks_the_engine_by_architecture(arch_dirs: dict[str, Path]) -> None:
    """auto: the fused engine for the architectures it runs, the library engine for the others; int8
    rollout weights need the fused engine, so another architecture is refused in one line."""
    from evsys.schema.errors import EvsysError

    for architecture in ("llama", "gpt2"):
        backend = make(arch_dirs[architecture], architecture)
        assert backend.engines.for_batch(16).name == ("fused" if architecture in FUSED else "transformers")
        backend.close()
    with pytest.raises(EvsysError, match=r"cannot run .*model_type 'gpt2'"):
        make(arch_dirs["gpt2"], "gpt2", rollout_weights="int8")


def test_the_transformers_engine_gives_the_same_rollouts_with_a_static_cache(arch_dirs: dict[str, Path]) -> None:
    backend = make(arch_dirs["qwen3"], "qwen3", rollout_engine="transformers")
    randomize_lora(backend)
    dynamic = backend.sample(PROMPTS, n=2, max_tokens=6, temperature=1.0, seed=4)
    backend.engines.library.cache = "static"
    static = backend.sample(PROMPTS, n=2, max_tokens=6, temperature=1.0, seed=4)
    for ga, gb in zip(dynamic, static, strict=True):
        for sa, sb in zip(ga, gb, strict=True):
            assert sa.tokens == sb.tokens
            assert sa.logprobs == pytest.approx(sb.logprobs, rel=1e-5, abs=1e-5)
    backend.close()
