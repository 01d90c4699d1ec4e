"""``rollout_weights: auto`` and ``gradient_checkpointing: auto``: the choice per CPU kind and model.

The CPU's flags are injected, so every kind (AVX2 without VNNI, AVX-512 VNNI, no AVX2, and CUDA) is
covered whatever machine runs the tests."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from evsys.backends.local import auto_settings
from evsys.backends.local import backend as backend_module
from evsys.backends.local.backend import LocalBackend
from evsys.backends.local.cpu_features import CpuFeatures, cpu_flags, fbgemm_in_build, features_from, int8_available
from evsys.backends.local.loading import decoder_layers
from evsys.backends.local.params import LocalBackendParams
from evsys.schema.protocols import BackendSetup, Datum

pytestmark = pytest.mark.usefixtures("one_thread")

#: /proc/cpuinfo flags of the CPU kinds the backend distinguishes (abridged)
AVX2_ONLY = frozenset(["fpu", "sse4_2", "avx", "fma", "avx2", "bmi2"])  # e.g. AMD EPYC Zen 2
AVX512_VNNI = frozenset(
    ["fpu", "sse4_2", "avx", "fma", "avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni"]
)
NO_AVX2 = frozenset(["fpu", "sse4_2", "avx"])
KINDS = {"avx2": AVX2_ONLY, "avx512-vnni": AVX512_VNNI, "no-avx2": NO_AVX2}
needs_fbgemm = pytest.mark.skipif(not fbgemm_in_build(), reason="this torch has no fbgemm int8 kernels")


def test_cpu_kinds_from_flags() -> None:
    assert features_from(AVX2_ONLY, {}) == CpuFeatures(avx2=True, avx512=False, vnni=False)
    assert features_from(AVX512_VNNI, {}) == CpuFeatures(avx2=True, avx512=True, vnni=True)
    assert features_from(NO_AVX2, {}) == CpuFeatures(avx2=False, avx512=False, vnni=False)
    assert [features_from(flags, {}).kind for flags in KINDS.values()] == list(KINDS)
    # avx_vnni alone (VEX VNNI on an AVX2 CPU) is not what fbgemm's VNNI kernels need: 7-bit activations
    assert features_from(AVX2_ONLY | {"avx_vnni"}, {}).int8_reduce_range
    assert not features_from(AVX512_VNNI, {}).int8_reduce_range
    # capping the kernels (fbgemm's and torch's own variables) caps the features: the AVX2 kernels' choice
    assert features_from(AVX512_VNNI, {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}).kind == "avx2"
    assert features_from(AVX512_VNNI, {"ATEN_CPU_CAPABILITY": "avx2"}).kind == "avx2"
    assert features_from(AVX512_VNNI, {"ATEN_CPU_CAPABILITY": "default"}).kind == "no-avx2"
    assert features_from(AVX2_ONLY, {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX512_VNNI"}).kind == "avx2"  # never raises
    text = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni\nbugs\t\t: spectre_v1\n"
    assert cpu_flags(text) == frozenset({"fpu", "avx2", "avx512f", "avx512_vnni"})
    assert cpu_flags("no flags line") == frozenset()
    assert not int8_available(torch.device("cpu"), features_from(NO_AVX2, {}))
    assert not int8_available(torch.device("cuda"), features_from(AVX512_VNNI, {}))


@pytest.mark.parametrize(
    ("kind", "device", "expected"),
    [
        ("avx2", "cpu", "int8"),
        ("avx512-vnni", "cpu", "int8"),
        ("no-avx2", "cpu", "model"),
        ("avx512-vnni", "cuda", "model"),
    ],
)
@needs_fbgemm
def test_auto_rollout_weights_per_cpu_kind(kind: str, device: str, expected: str) -> None:
    features = features_from(KINDS[kind], {})
    got = auto_settings.resolve_rollout_weights(
        "auto", device=torch.device(device), engine="auto", features=features, unsupported=None
    )
    assert got.value == expected and got.requested == "auto" and got.reason
    checkpointing = auto_settings.resolve_checkpointing("auto", got.value, layers=30)
    assert checkpointing.value == ("auto" if expected == "int8" else False)


def test_auto_rollout_weights_keeps_explicit_values_and_falls_back_for_other_models() -> None:
    vnni = features_from(AVX512_VNNI, {})
    cpu = torch.device("cpu")
    for value in ("model", "int8"):
        assert (
            auto_settings.resolve_rollout_weights(
                value, device=cpu, engine="auto", features=vnni, unsupported=None
            ).value
            == value
        )
    library = auto_settings.resolve_rollout_weights(
        "auto", device=cpu, engine="transformers", features=vnni, unsupported=None
    )
    assert library.value == "model" and "transformers" in library.reason
    other = auto_settings.resolve_rollout_weights(
        "auto", device=cpu, engine="auto", features=vnni, unsupported="DoRA adapters"
    )
    assert other.value == "model" and "DoRA" in other.reason
    assert auto_settings.resolve_checkpointing(12, "int8", 30).value == 12
    assert auto_settings.resolve_checkpointing("auto", "int8", 0).value is False


def test_auto_checkpoint_layers_make_room_for_the_int8_copy() -> None:
    # SmolLM2-135M: 30 layers, hidden 576, intermediate 1536; the int8 copy ~134 MB
    config = type("C", (), {"hidden_size": 576, "intermediate_size": 1536})()
    per_token = auto_settings.activation_bytes_per_token(config, torch.float32)
    assert per_token == (3 * 1536 + 6 * 576) * 4
    copy = 134_000_000
    assert auto_settings.auto_checkpoint_layers(70, 30, per_token, copy) == 30  # batch 1: every layer
    eight = auto_settings.auto_checkpoint_layers(560, 30, per_token, copy)  # batch 8: only some
    assert 0 < eight < 30 and 560 * per_token * eight >= copy > 560 * per_token * (eight - 1)
    assert auto_settings.auto_checkpoint_layers(560, 30, per_token, 0) == 0  # no copy: keep everything


def _make(tiny_dir: Path, **params: object) -> LocalBackend:
    return LocalBackend(BackendSetup(model_name=str(tiny_dir), lora_rank=2, seed=0), LocalBackendParams(**params))


@pytest.mark.parametrize("kind", ["avx2", "avx512-vnni", "no-avx2"])
@needs_fbgemm
def test_the_backend_resolves_logs_and_records_the_choice(
    tiny_dir: Path, kind: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(backend_module, "cpu_features", lambda: features_from(KINDS[kind], {}))
    with caplog.at_level(logging.INFO, logger="evsys.progress"):
        backend = _make(tiny_dir, device="cpu")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("backend: ")]
    resolved = backend.resolved_settings()
    if kind == "no-avx2":
        assert backend.rollout_weights == "model"
        assert lines == [
            "backend: rollout_weights model (auto: CPU without AVX2: fbgemm has no int8 kernels here); "
            "gradient_checkpointing false (auto: no int8 rollout copy to make room for)"
        ]
        assert resolved["gradient_checkpointing"]["value"] is False
    else:
        assert backend.rollout_weights == "int8"
        label = "AVX2 without VNNI" if kind == "avx2" else "AVX-512 VNNI"
        assert lines == [
            f"backend: rollout_weights int8 (auto: {label} CPU: an int8 copy reads ~4x fewer bytes per token); "
            "gradient_checkpointing auto (auto: per batch, the first layers whose kept activations add up to "
            "the int8 copy's size)"
        ]
        assert resolved["gradient_checkpointing"] == {
            "requested": "auto",
            "value": "auto",
            "reason": "per batch, the first layers whose kept activations add up to the int8 copy's size",
        }
    assert resolved["rollout_weights"]["requested"] == "auto"
    assert resolved["rollout_weights"]["value"] == backend.rollout_weights
    backend.close()


@pytest.mark.skipif(not int8_available(torch.device("cpu")), reason="no fbgemm int8 kernels on this CPU/torch")
def test_auto_checkpointing_recomputes_the_layers_it_picked_with_the_same_gradients(tiny_dir: Path) -> None:
    auto = _make(tiny_dir, device="cpu", rollout_weights="int8")
    plain = _make(tiny_dir, device="cpu", rollout_weights="int8", gradient_checkpointing=False)
    prompt = auto.render_chat([{"role": "user", "content": "Name a colour."}])
    [[rollout]] = auto.sample([prompt], max_tokens=6, seed=0)
    plain.sample([prompt], max_tokens=2, seed=0)  # builds its int8 copy too
    tokens = prompt + rollout.tokens
    datum = Datum(input_tokens=tokens[:-1], target_tokens=tokens[1:], weights=[1.0] * (len(tokens) - 1))
    layers = decoder_layers(auto._causal_lm)
    flags: list[bool] = []  # per layer forward: whether it is checkpointed
    runs: list[int] = []  # layer indices whose attention ran (forward, then again for each recompute)
    for index, layer in enumerate(layers):
        layer.register_forward_pre_hook(lambda m, a: flags.append(bool(m.gradient_checkpointing and m.training)))
        layer.self_attn.register_forward_pre_hook(lambda m, a, i=index: runs.append(i))
    auto.forward_backward([datum], "cross_entropy")
    plain.forward_backward([datum], "cross_entropy")
    per_token = auto_settings.activation_bytes_per_token(auto._causal_lm.config, torch.float32)
    expected = auto_settings.auto_checkpoint_layers(
        len(tokens) - 1, len(layers), per_token, auto_settings.int8_copy_bytes(auto._causal_lm)
    )
    assert expected > 0
    assert flags == [i < expected for i in range(len(layers))]
    assert sorted(runs) == sorted([*range(len(layers)), *range(expected)])  # the picked layers ran again
    for a, b in zip(auto._trainable, plain._trainable, strict=True):
        assert a.grad is not None and b.grad is not None
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)
    auto.close()
    plain.close()
