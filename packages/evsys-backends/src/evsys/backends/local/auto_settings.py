"""What ``rollout_weights: auto`` and ``gradient_checkpointing: auto`` resolve to, per CPU and model.

The rules (docs/performance.md has the measurements behind them):

- **rollout_weights**: ``int8`` on a CPU with AVX2 (with or without AVX-512 VNNI) when torch has
  fbgemm's int8 kernels and the fused decoder runs the model: decode at batch 1 is bound by the bytes
  each token reads, and the int8 copy reads ~4x fewer than float32. ``model`` (the float32/bf16
  training weights) everywhere else: on CUDA, on a CPU without AVX2 (fbgemm has no kernels there), with
  ``rollout_engine: transformers``, or for a model the fused decoder does not run.
- **gradient_checkpointing**: the int8 copy stays resident beside the float weights, so the student's
  forward/backward pays for it: each ``forward_backward`` recomputes just enough of the first decoder
  layers that the activations it keeps shrink by the copy's size (all layers when they hold less than
  that). Without an int8 copy nothing is recomputed: the peak is then no higher than keeping every
  activation with float32 rollouts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from evsys.backends.local.cpu_features import CpuFeatures, fbgemm_in_build

RolloutWeights = Literal["model", "int8"]


@dataclass(frozen=True)
class Resolved:
    """One ``auto`` setting as resolved: the value used and why, for the run's log and resolved_config.json."""

    requested: Any
    value: Any
    reason: str

    def as_json(self) -> dict[str, Any]:
        """``{"requested", "value", "reason"}`` (what resolved_config.json records)."""
        return {"requested": self.requested, "value": self.value, "reason": self.reason}


def resolve_rollout_weights(
    requested: str, *, device: torch.device, engine: str, features: CpuFeatures, unsupported: str | None
) -> Resolved:
    """The rollout weights for ``requested`` (``auto``, ``model`` or ``int8``) on ``device`` with CPU
    ``features``; ``unsupported`` is why the fused decoder cannot run the model (None when it can)."""
    if requested != "auto":
        return Resolved(requested, requested, "set in the config")
    if device.type != "cpu":
        return Resolved(requested, "model", f"{device.type}: the int8 rollout kernels are CPU-only")
    if not features.avx2:
        return Resolved(requested, "model", "CPU without AVX2: fbgemm has no int8 kernels here")
    if not fbgemm_in_build():
        return Resolved(requested, "model", "this torch has no fbgemm int8 kernels")
    if engine == "transformers":
        return Resolved(requested, "model", "rollout_engine transformers reads the model's weights")
    if unsupported is not None:
        return Resolved(requested, "model", f"the fused decoder cannot run this model ({unsupported})")
    return Resolved(requested, "int8", f"{features.label} CPU: an int8 copy reads ~4x fewer bytes per token")


def resolve_checkpointing(requested: bool | int | str, rollout_weights: str, layers: int) -> Resolved:
    """The checkpointing setting: ``auto`` stays ``auto`` (decided per batch by :func:`auto_checkpoint_layers`)
    with int8 rollouts and on a model whose layers can be checkpointed one by one; otherwise off."""
    if requested != "auto":
        return Resolved(requested, requested, "set in the config")
    if rollout_weights != "int8":
        return Resolved(requested, False, "no int8 rollout copy to make room for")
    if layers == 0:
        return Resolved(requested, False, "the model's layers cannot be checkpointed one by one")
    return Resolved(
        requested, "auto", "per batch, the first layers whose kept activations add up to the int8 copy's size"
    )


def activation_bytes_per_token(config: Any, dtype: torch.dtype) -> int:
    """What one decoder layer keeps for the backward per token, estimated from the model's shape: the MLP's
    gate, up and ``silu(gate)`` (3 x intermediate) and ~6 hidden-sized tensors (norms, q/k/v, attention
    output, residuals). SmolLM2-135M measured ~7.6k floats per token and layer against 8.1k here."""
    hidden = int(config.hidden_size)
    intermediate = int(getattr(config, "intermediate_size", 4 * hidden))
    return (3 * intermediate + 6 * hidden) * torch.finfo(dtype).bits // 8


def int8_copy_bytes(causal_lm: Any) -> int:
    """Bytes of the int8 rollout copy (one byte per frozen base weight of the decoder's linears and the head)."""
    total = causal_lm.get_output_embeddings().weight.numel()
    for layer in causal_lm.get_decoder().layers:
        for part in (layer.self_attn, layer.mlp):
            for module in part.children():
                base = getattr(module, "base_layer", module)
                if isinstance(base, torch.nn.Linear):
                    total += base.weight.numel()
    return total


def auto_checkpoint_layers(tokens: int, layers: int, bytes_per_token: int, room: int) -> int:
    """How many of the first ``layers`` decoder layers to recompute so that the activations kept for
    ``tokens`` positions shrink by ``room`` bytes (0 when ``room`` is 0; every layer when they hold less)."""
    if room <= 0 or tokens <= 0 or layers <= 0:
        return 0
    per_layer = tokens * bytes_per_token
    return min(layers, math.ceil(room / per_layer))


def set_checkpointed_layers(decoder_layers: list[Any], count: int) -> None:
    """Recompute the first ``count`` layers in the backward, keep the others' activations (transformers'
    ``GradientCheckpointingLayer.gradient_checkpointing`` flag, read at each forward)."""
    for index, layer in enumerate(decoder_layers):
        layer.gradient_checkpointing = index < count


def describe(weights: Resolved, checkpointing: Resolved) -> str:
    """The run's one log line for the two settings, e.g.
    ``backend: rollout_weights int8 (auto: AVX-512 VNNI CPU, ...); gradient_checkpointing auto (...)``."""

    def part(name: str, item: Resolved) -> str:
        value = str(item.value).lower() if isinstance(item.value, bool) else item.value
        origin = "auto: " if item.requested == "auto" else ""
        return f"{name} {value} ({origin}{item.reason})"

    return f"backend: {part('rollout_weights', weights)}; {part('gradient_checkpointing', checkpointing)}"
