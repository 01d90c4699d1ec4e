"""The fused rollout engine (evsys.backends.local.engines) against the transformers engine, on a tiny Llama."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from evsys.backends.local.backend import LocalBackend
from evsys.backends.local.engines.fused_decoder import int8_available, unsupported_reason
from evsys.backends.local.engines.shared_prefix import MIN_ROWS_SAVED, shared_prefix_length
from evsys.backends.local.params import LocalBackendParams
from evsys.schema.errors import EvsysError
from evsys.schema.protocols import BackendSetup, Datum

PROMPTS = [[1, 87, 85, 71, 84, 201, 74, 75], [1, 67, 201, 90], [40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50]]


pytestmark = pytest.mark.usefixtures("one_thread")


def make(model_dir: Path, **params: object) -> LocalBackend:
    params.setdefault("rollout_weights", "model")  # the exact float path unless a test asks for int8
    return LocalBackend(BackendSetup(model_name=str(model_dir), lora_rank=4, seed=0), LocalBackendParams(**params))


def same_lora(src: LocalBackend, dst: LocalBackend, seed: int = 3) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in src.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    dst.model.load_state_dict(src.model.state_dict())


def policy_logprobs(backend: LocalBackend, prompt: list[int], tokens: list[int]) -> list[float]:
    with torch.no_grad():
        logits = backend.model(input_ids=torch.tensor([prompt + tokens])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return [float(logp[len(prompt) + i - 1, t]) for i, t in enumerate(tokens)]


def test_fused_equals_the_transformers_engine(tiny_dir: Path, assert_same_rollouts: Callable[..., None]) -> None:
    """Same tokens (greedy, and the same seeded draws at temperature 1), logprobs within 1e-5 (float32)."""
    fused, library = make(tiny_dir, rollout_engine="fused"), make(tiny_dir, rollout_engine="transformers")
    same_lora(fused, library)
    for temperature in (0.0, 1.0):
        a = fused.sample(PROMPTS, n=2, max_tokens=10, temperature=temperature, seed=7)
        b = library.sample(PROMPTS, n=2, max_tokens=10, temperature=temperature, seed=7)
        assert_same_rollouts(a, b)
    assert fused.engines.fused is not None and fused.engines.fused.built and library.engines.fused is None


#: a system turn every prompt starts with, then different questions (the shared-prefix prefill's case)
SHARED = [1, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70]
SHARED_PROMPTS = [[*SHARED, 87, 85, 71], [*SHARED, 90], [*SHARED, 40, 41, 42, 43, 44, 45], [*SHARED, 50, 51]]


def test_a_shared_prompt_prefix_is_prefilled_once_with_the_same_rollouts(
    tiny_dir: Path, assert_same_rollouts: Callable[..., None]
) -> None:
    """Prompts that start alike (and GRPO groups) prefill their common start once. The int8 path's
    shortcuts (this one, no mask without padding, one-query attention, the seven-op RMSNorm), turned on
    in float, give the transformers engine's rollouts: same tokens at temperature 0, 0.7 and 1, logprobs
    within 1e-5."""
    fused, library = make(tiny_dir, rollout_engine="fused"), make(tiny_dir, rollout_engine="transformers")
    same_lora(fused, library)
    prefixes: list[torch.Tensor] = []
    decoder = fused.engines.fused.decoder  # type: ignore[union-attr]
    assert not decoder.shortcuts  # float weights keep their numbers
    decoder.shortcuts = True
    prefill = decoder._prefill_prefix
    decoder._prefill_prefix = lambda prefix: (prefixes.append(prefix), prefill(prefix))[1]  # type: ignore[method-assign]
    for temperature in (0.0, 0.7, 1.0):
        a = fused.sample(SHARED_PROMPTS, n=2, max_tokens=10, temperature=temperature, seed=7)
        b = library.sample(SHARED_PROMPTS, n=2, max_tokens=10, temperature=temperature, seed=7)
        assert_same_rollouts(a, b)
    assert [p.tolist() for p in prefixes] == [[SHARED]] * 3  # the whole shared start, once per sample
    # a GRPO group: every row has the same prompt, so each one prefills only its last token
    a = fused.sample([SHARED_PROMPTS[0]], n=6, max_tokens=6, temperature=1.0, seed=3)
    b = library.sample([SHARED_PROMPTS[0]], n=6, max_tokens=6, temperature=1.0, seed=3)
    assert [s.tokens for s in a[0]] == [s.tokens for s in b[0]]
    assert prefixes[-1].tolist() == [SHARED_PROMPTS[0][:-1]]


def test_shared_prefix_length() -> None:
    def length(prompts: list[list[int]]) -> int:
        width = max(map(len, prompts))
        ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
        valid = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        return shared_prefix_length(ids, valid)

    assert length([[*SHARED, 1, 2]] * 2 + [[*SHARED, 3]] * 2) == len(SHARED)
    assert length([SHARED] * 8) == len(SHARED) - 1  # every row keeps one token of its own
    assert length([[5, *SHARED], [*SHARED, 5]] * 4) == 0
    assert length([[*SHARED[:5], 1], [*SHARED[:5], 2]]) == 0  # saves 5 rows: not worth a second weight pass
    assert MIN_ROWS_SAVED > 5


def test_fused_sees_every_optimizer_step(tiny_dir: Path) -> None:
    """The decoder reads the live LoRA parameters: after a training step its logprobs are the new policy's."""
    backend = make(tiny_dir, rollout_engine="fused")
    same_lora(backend, backend)
    [[first]] = backend.sample([PROMPTS[0]], max_tokens=6, seed=1)
    seq = PROMPTS[0] + first.tokens
    datum = Datum(input_tokens=seq[:-1], target_tokens=seq[1:], weights=[1.0] * (len(seq) - 1))
    backend.forward_backward([datum], "cross_entropy")
    backend.optim_step(learning_rate=0.05)
    [[after]] = backend.sample([PROMPTS[0]], max_tokens=6, seed=1)
    assert after.logprobs == pytest.approx(policy_logprobs(backend, PROMPTS[0], after.tokens), abs=1e-4)


def test_fused_bfloat16_model_with_float32_lora(tiny_dir: Path) -> None:
    """A bfloat16 base keeps float32 LoRA weights: the decoder adds the float32 update to bfloat16 outputs."""
    backend = make(tiny_dir, dtype="bfloat16", rollout_engine="fused")
    same_lora(backend, backend)
    lora = [p for name, p in backend.model.named_parameters() if "lora_" in name]
    assert lora and all(p.dtype == torch.float32 for p in lora)
    [[out]] = backend.sample([PROMPTS[0]], max_tokens=8, seed=2)
    diffs = torch.tensor(out.logprobs) - torch.tensor(policy_logprobs(backend, PROMPTS[0], out.tokens))
    assert backend.engines.fused is not None and backend.engines.fused.built
    assert float(diffs.abs().max()) < 0.05, diffs  # bfloat16 rounding; without the update: ~3


@pytest.mark.skipif(not int8_available(torch.device("cpu")), reason="no fbgemm/x86 int8 kernels in this torch")
def test_int8_rollouts_stay_close_to_the_float_policy(tiny_dir: Path) -> None:
    backend = make(tiny_dir, rollout_weights="int8")
    same_lora(backend, backend)
    prompts = PROMPTS + SHARED_PROMPTS  # both prefills: all rows at once, and a shared start once
    out = backend.sample(prompts, n=4, max_tokens=12, seed=0)
    out += backend.sample(SHARED_PROMPTS, n=2, max_tokens=12, seed=1)
    prompts += SHARED_PROMPTS
    diffs = []
    for prompt, group in zip(prompts, out, strict=True):
        for s in group:
            assert len(s.tokens) == len(s.logprobs) >= 1
            diffs += [a - b for a, b in zip(s.logprobs, policy_logprobs(backend, prompt, s.tokens), strict=True)]
    d = torch.tensor(diffs).abs()
    # the int8 sampler is an approximation of the float policy: close, not equal (see docs/performance.md)
    assert float(d.mean()) < 0.1 and float(d.max()) < 1.0, (float(d.mean()), float(d.max()))
    assert float(d.max()) > 0  # it really ran the int8 copy


def test_params_and_errors(tiny_dir: Path) -> None:
    assert LocalBackendParams().rollout_engine == "auto" and LocalBackendParams().rollout_weights == "auto"
    with pytest.raises(ValueError):
        LocalBackendParams(rollout_weights="int4")  # type: ignore[arg-type]
    assert not int8_available(torch.device("cuda"))
    backend = make(tiny_dir)
    assert unsupported_reason(backend._causal_lm) is None
    assert backend.engines.fused is not None  # auto: fused for a Llama
    backend._causal_lm.config.model_type = "gpt2"  # pretend: an architecture the fused decoder does not know
    assert "model_type" in (unsupported_reason(backend._causal_lm) or "")
    with pytest.raises(EvsysError, match="rollout_engine"):
        make(tiny_dir, rollout_engine="transformers", rollout_weights="int8")
    with pytest.raises(ValueError):
        LocalBackendParams(rollout_engine="generic")  # type: ignore[arg-type]


def test_auto_falls_back_and_fused_and_int8_refuse(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evsys.backends.local.engines import fused as fused_engine

    monkeypatch.setattr(fused_engine, "unsupported_reason", lambda causal_lm, total_length=None: "model_type 'x'")
    backend = make(tiny_dir)
    assert backend.engines.fused is None  # auto: the transformers engine
    [[s]] = backend.sample([PROMPTS[0]], max_tokens=3, seed=0)
    assert len(s.tokens) == 3
    for strict in ({"rollout_engine": "fused"}, {"rollout_weights": "int8"}):
        with pytest.raises(EvsysError, match=r"cannot run .*model_type 'x'.*rollout_engine 'transformers'"):
            make(tiny_dir, **strict)


def test_a_sliding_window_shorter_than_the_batch_is_caught_after_the_build(tiny_dir: Path) -> None:
    # the structural checks run once, when the decoder is built; the window depends on each batch's length
    strict = make(tiny_dir, rollout_engine="fused")
    strict.sample([PROMPTS[0]], max_tokens=2, seed=0)
    assert strict.engines.fused is not None and strict.engines.fused.built
    config = strict._causal_lm.config
    config.sliding_window, config.use_sliding_window = len(PROMPTS[0]) + 4, True
    strict.sample([PROMPTS[0]], max_tokens=4, seed=0)  # fits in the window
    with pytest.raises(EvsysError, match="sliding-window attention"):
        strict.sample([PROMPTS[0]], max_tokens=5, seed=0)


# ----------------------------------------------------------------- int8 building blocks


needs_int8 = pytest.mark.skipif(not int8_available(torch.device("cpu")), reason="no fbgemm int8 kernels in this build")


def _plain(weights: list[torch.Tensor]) -> list[torch.nn.Linear]:
    out = []
    for w in weights:
        lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            lin.weight.copy_(w)
        out.append(lin)
    return out


@needs_int8
def test_int8_pack_is_blockwise_and_matches_the_float_product(monkeypatch: pytest.MonkeyPatch) -> None:
    from evsys.backends.local.engines import fused_linear

    monkeypatch.setattr(fused_linear, "PACK_ROWS", 48)  # several packed pieces over a 3-weight fusion
    monkeypatch.setattr(fused_linear, "QUANT_ROWS", 16)
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(rows, 32, generator=gen) for rows in (40, 24, 56)]
    lin = fused_linear.build_linear(_plain(weights), int8=True)
    assert len(lin.packed) == 3  # 120 rows in pieces of at most 48
    x = torch.randn(5, 32, generator=gen)
    with torch.inference_mode():
        got = lin(x)
    want = x @ torch.cat(weights).T
    assert got.shape == want.shape
    assert (got - want).abs().max() / want.abs().max() < 0.03


@needs_int8
def test_int8_outlier_channels_stay_float() -> None:
    from evsys.backends.local.engines.fused_linear import build_linear

    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(64, 96, generator=gen)
    act_max = torch.ones(96)
    act_max[[3, 50]] = 500.0  # calibration saw two channels with huge activations
    x = torch.randn(4, 96, generator=gen)
    x[:, [3, 50]] *= 500.0
    want = x @ weight.T
    errors = {}
    for outliers in (0, 2):
        lin = build_linear(_plain([weight]), int8=True, act_max=act_max, outliers=outliers)
        with torch.inference_mode():
            errors[outliers] = float((lin(x) - want).abs().mean())
    assert lin.outliers is not None and lin.outliers.tolist() == [3, 50]
    assert errors[2] < errors[0] / 5, errors


@needs_int8
def test_int8_gate_up_hands_down_proj_its_input_reordered_and_scaled() -> None:
    """gate|up's output comes in down_proj's channel order (outliers last) with down_proj's SmoothQuant scale
    on up's rows: silu(gate) * up feeds down_proj's int8 GEMM and float outlier term as it is."""
    import torch.nn.functional as F

    from evsys.backends.local.engines.fused_linear import build_linear, gated_input_for

    gen = torch.Generator().manual_seed(4)
    gate, up, down = (torch.randn(rows, cols, generator=gen) for rows, cols in ((128, 32), (128, 32), (32, 128)))
    x = torch.randn(6, 32, generator=gen)
    inner = F.silu(x @ gate.T) * (x @ up.T)
    down_max = inner.abs().amax(dim=0)
    down_max[[5, 77]] = 300.0  # two channels calibration saw loud: they stay float, ordered last
    down_lin = build_linear(_plain([down]), int8=True, act_max=down_max, outliers=2, alpha=0.5)
    feed = gated_input_for(down_lin)
    assert down_lin.prescaled and down_lin.in_order is not None and down_lin.in_order[-2:].tolist() == [5, 77]
    gate_up = build_linear(_plain([gate, up]), int8=True, act_max=x.abs().amax(dim=0), **feed)
    with torch.inference_mode():
        g, u = gate_up(x).chunk(2, dim=-1)
        got = down_lin(F.silu(g) * u)
    want = inner @ down.T
    assert float((got - want).abs().max() / want.abs().max()) < 0.03


@needs_int8
def test_int8_rows_get_their_own_activation_range() -> None:
    from evsys.backends.local.engines.fused_linear import build_linear

    gen = torch.Generator().manual_seed(2)
    weight = torch.randn(64, 96, generator=gen)
    lin = build_linear(_plain([weight]), int8=True)
    x = torch.randn(2, 96, generator=gen)
    x[1] *= 1000.0  # a loud row must not cost the quiet row its precision
    with torch.inference_mode():
        got = lin(x)
    want = x @ weight.T
    quiet_error = float((got[0] - want[0]).abs().max() / want[0].abs().max())
    assert quiet_error < 0.03


def test_rotary_in_three_ops_equals_rotate_half() -> None:
    from evsys.backends.local.engines.fused_decoder import _rotary

    gen = torch.Generator().manual_seed(3)
    x, cos, sin = (torch.randn(2, 3, 5, 16, generator=gen) for _ in range(3))
    half = 8
    reference = x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin
    signed_sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
    torch.testing.assert_close(_rotary(x, cos, signed_sin), reference, rtol=1e-6, atol=1e-6)


@needs_int8
def test_int8_build_packs_on_its_own_thread(monkeypatch: pytest.MonkeyPatch, tiny_dir: Path) -> None:
    # fbgemm allocates the packed weights on the thread that packs: one dedicated thread keeps them in
    # their own malloc arena, apart from the build's temporaries (test_local_memory measures the effect)
    import threading

    from evsys.backends.local.engines import fused_decoder as rollout

    threads: list[str] = []
    quantized = torch.ops.quantized

    class RecordingOps:
        def __getattr__(self, name: str) -> object:
            return getattr(quantized, name)

        def linear_prepack(self, *args: object) -> object:
            threads.append(threading.current_thread().name)
            return quantized.linear_prepack(*args)

    monkeypatch.setattr(rollout.torch.ops, "quantized", RecordingOps())
    backend = make(tiny_dir, device="cpu", rollout_weights="int8")
    backend.sample([PROMPTS[0]], max_tokens=2)  # the int8 copy is built on the first sample
    monkeypatch.undo()
    layers = len(backend._causal_lm.get_decoder().layers)
    assert len(threads) >= 4 * layers + 1  # q|k|v, o, gate|up and down per layer, and the head
    assert all(name.startswith("evsys-int8-pack") for name in threads), set(threads)
