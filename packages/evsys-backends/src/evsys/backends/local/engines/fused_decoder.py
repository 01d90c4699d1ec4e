"""EvSys' fused decode path for rollouts on Llama-family models (Llama, Mistral, Qwen2), with a static KV cache.

Why: on a CPU at batch 1 each new token reads every weight once, and ``transformers``' generic forward
plus peft's LoRA dispatch add per-token Python work on top. :class:`FusedDecoder` runs the same
computation as ``LlamaForCausalLM`` with the LoRA adapter active, written as a handful of tensor ops per
layer over a preallocated KV cache, and can read the frozen base weights from an int8 copy:

- ``weights="model"``: the model's own weight tensors (no copy); the LoRA update is added as
  ``scale * B(A x)`` from the live peft parameters, so logprobs equal ``forward_backward``'s up to
  float rounding (~1e-6 in float32).
- ``weights="int8"`` (CPU only): every frozen base linear (q/k/v fused, o, gate/up fused, down, and the
  output head) is quantized once, per output channel, to int8 after SmoothQuant scaling (activation
  maxima from a fixed calibration chat; alpha 0.7, 0.5 for down_proj), and run with fbgemm's
  dynamic-quantization GEMM with each row (token) given its own activation range. down_proj's 64
  input channels with the largest activations (``silu(gate) * up`` has a few huge ones) stay float.
  The LoRA update stays float32 and exact. The base weights never change during training, so the
  copy is built once (~150 MB for SmolLM2-135M, ~28% of the float32 model) and never drifts. Logprobs
  are those of the int8 sampler (like vLLM's in the SDFT paper): within a measured tolerance of the
  float32 policy's (``benchmarks/rollout_tolerance.py``, docs/performance.md), and exactly what
  importance weights ``exp(logp - sampler_logp)`` need.

Anything else (another architecture, a LoRA variant such as DoRA, sliding-window attention shorter
than the sequence) is refused by :func:`unsupported_reason`, and the backend falls back to the
``transformers`` engine.
"""

from __future__ import annotations

from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import torch
import torch.nn.functional as F

from evsys.backends.local.cpu_features import int8_available as int8_available  # re-exported
from evsys.backends.local.engines.fused_linear import (
    DOWN_OUTLIER_CHANNELS,
    DOWN_SMOOTH_ALPHA,
    FusedLinear,
    build_linear,
    gated_input_for,
    release_build_memory,
)
from evsys.backends.local.engines.shared_prefix import shared_layout_valid, shared_prefix_length

SUPPORTED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2"})
_ATTN = ("q_proj", "k_proj", "v_proj")
#: Text the int8 copy is calibrated on (per-channel activation maxima for SmoothQuant), as a chat:
#: prose, arithmetic, code and a list, so the outlier channels of typical prompts show up.
CALIBRATION_MESSAGES = (
    {"role": "user", "content": "Explain why the sky is blue, then compute 17 * 23 and show your work."},
    {
        "role": "assistant",
        "content": (
            "Sunlight scatters off air molecules; shorter (blue) wavelengths scatter most, so the sky looks blue.\n"
            "17 * 23 = 17 * 20 + 17 * 3 = 340 + 51 = 391.\n"
            "def add(a, b):\n    return a + b  # Python\n"
            "1. Paris, France\n2. Tokyo, Japan\n3. 100 degrees Celsius; $4.50; 2024-01-31; x^2 + y^2 = z^2."
        ),
    },
)
_MLP = ("gate_proj", "up_proj")


def sliding_window_reason(config: Any, total_length: int | None = None) -> str | None:
    """The one check of :func:`unsupported_reason` that depends on the batch: a sliding window shorter than
    ``total_length`` positions (None = any length)."""
    window = getattr(config, "sliding_window", None)
    uses_window = getattr(config, "use_sliding_window", getattr(config, "model_type", None) == "mistral")
    if window and uses_window and (total_length is None or total_length > window):
        return "sliding-window attention"
    return None


def unsupported_reason(causal_lm: Any, total_length: int | None = None) -> str | None:
    """Why :class:`FusedDecoder` cannot run this model (None when it can)."""
    config = causal_lm.config
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        return f"model_type {model_type!r} is not one of {sorted(SUPPORTED_MODEL_TYPES)}"
    if getattr(config, "hidden_act", "silu") != "silu" or getattr(config, "pretraining_tp", 1) != 1:
        return "only silu MLPs without tensor-parallel slicing"
    window = sliding_window_reason(config, total_length)
    if window is not None:
        return window
    layer = causal_lm.get_decoder().layers[0]
    for name in (*_ATTN, "o_proj"):
        if not hasattr(layer.self_attn, name):
            return f"no self_attn.{name}"
    if any(hasattr(layer.self_attn, n) for n in ("q_norm", "k_norm")):
        return "q/k norms"
    for name in (*_MLP, "down_proj"):
        if not hasattr(layer.mlp, name):
            return f"no mlp.{name}"
    for module in causal_lm.modules():
        if getattr(module, "use_dora", {}) and any(module.use_dora.values()):
            return "DoRA adapters"
        if getattr(module, "merged_adapters", None):
            return "merged adapters"
    return None


class _Layer:
    def __init__(
        self, layer: Any, int8: bool, stats: dict[str, torch.Tensor] | None = None, packer: Executor | None = None
    ) -> None:
        attn, mlp = layer.self_attn, layer.mlp
        stats = stats or {}
        self.norm1, self.eps1 = layer.input_layernorm.weight, float(layer.input_layernorm.variance_epsilon)
        self.norm2, self.eps2 = (
            layer.post_attention_layernorm.weight,
            float(layer.post_attention_layernorm.variance_epsilon),
        )
        # down_proj's input (silu(gate) * up) has a few channels with outliers that per-tensor int8
        # activations cannot carry: in int8 mode those channels stay float, the rest is int8
        self.down = build_linear(
            [mlp.down_proj], int8, stats.get("down"), DOWN_OUTLIER_CHANNELS, DOWN_SMOOTH_ALPHA, packer
        )
        if int8:
            self.qkv: list[FusedLinear] = [
                build_linear([getattr(attn, n) for n in _ATTN], True, stats.get("qkv"), packer=packer)
            ]
            self.gate_up: list[FusedLinear] = [
                build_linear(
                    [getattr(mlp, n) for n in _MLP],
                    True,
                    stats.get("gate_up"),
                    packer=packer,
                    **gated_input_for(self.down),
                )
            ]
            # SmoothQuant's input scaling folded into the RMSNorm weights that feed these two linears
            qkv, gate_up = self.qkv[0], self.gate_up[0]
            if qkv.in_scale is not None:
                self.norm1, qkv.prescaled = self.norm1 * qkv.in_scale, True
            if gate_up.in_scale is not None:
                self.norm2, gate_up.prescaled = self.norm2 * gate_up.in_scale, True
        else:
            self.qkv = [build_linear([getattr(attn, n)], False) for n in _ATTN]
            self.gate_up = [build_linear([getattr(mlp, n)], False) for n in _MLP]
        self.o = build_linear([attn.o_proj], int8, stats.get("o"), packer=packer)

    def linears(self) -> list[FusedLinear]:
        return [*self.qkv, *self.gate_up, self.o, self.down]


def _rms_int8(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Llama's RMSNorm in seven float32 ops (:attr:`FusedDecoder.shortcuts`): one ``vector_norm``, four in-place ops on one
    number per row for ``rsqrt(|x|^2 / n + eps)``, then two products (``F.rms_norm`` runs ~12 ops on a CPU,
    and a decode step normalizes 61 times per token). It rounds differently from :func:`_rms`, which the
    float path keeps so that its rollouts stay the same numbers."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    scale = norm.mul_(norm).mul_(1.0 / x.shape[-1]).add_(eps).rsqrt_()
    return torch.mul(x, weight).mul_(scale)


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Llama's RMSNorm (normalized in float32, then scaled by ``weight``)."""
    if x.dtype == torch.float32 and weight.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def _rotary(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """``x * cos + rotate_half(x) * sin`` in three ops: ``rotate_half(x) * sin == swap_halves(x) * signed_sin``,
    where ``signed_sin`` is ``sin`` with its first half negated; the halves are swapped by one ``flip`` of
    a size-2 axis (``roll`` by half the width is a slice, a slice and a ``cat``)."""
    width = x.shape[-1]
    swapped = x.unflatten(-1, (2, width // 2)).flip(-2).flatten(-2)
    return torch.addcmul(x * cos, swapped, signed_sin)


class FusedDecoder:
    """Prefill + one-token decode steps of a peft-wrapped Llama-family ``*ForCausalLM`` (adapter on).

    Build once per backend (``weights`` is ``"model"`` or ``"int8"``); call :meth:`refresh_lora` before
    each ``sample`` (the LoRA parameters change every optimizer step), then :meth:`start` per batch.
    """

    def __init__(self, causal_lm: Any, weights: str = "model", calibration: torch.Tensor | None = None) -> None:
        if weights not in ("model", "int8"):
            raise ValueError(f"weights must be 'model' or 'int8', got {weights!r}")
        stats: list[dict[str, torch.Tensor]] | None = None
        if weights == "int8" and calibration is not None:
            stats = FusedDecoder(causal_lm, "model").activation_maxima(calibration)
        self.int8 = weights == "int8"
        #: the shortcuts that compute the same function but round differently: a shared prompt prefix
        #: prefilled once, no mask without padding, one-query attention, the seven-op RMSNorm. On with int8
        #: weights; off with float ones, whose rollouts keep their numbers from version to version (the
        #: walkthroughs' exact rollouts). Tests turn them on in float to check they compute the same rollouts.
        self.shortcuts = self.int8
        #: per-layer activation maxima while :meth:`activation_maxima` runs, else None
        self._stats: list[dict[str, torch.Tensor]] | None = None
        self.causal_lm = causal_lm
        config = causal_lm.config
        decoder = causal_lm.get_decoder()
        self.embed = decoder.embed_tokens.weight
        self.final_norm, self.final_eps = decoder.norm.weight, float(decoder.norm.variance_epsilon)
        self.rotary = decoder.rotary_emb
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(getattr(config, "num_key_value_heads", None) or self.heads)
        self.head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // self.heads)
        self.scale = self.head_dim**-0.5
        head = causal_lm.get_output_embeddings()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="evsys-int8-pack") as packer:
            self.layers = [
                _Layer(layer, self.int8, stats[i] if stats else None, packer) for i, layer in enumerate(decoder.layers)
            ]
            self.head = build_linear([head], self.int8, stats[-1].get("head") if stats else None, packer=packer)
        self.head.sources = []  # the output head never carries LoRA here
        if self.int8:
            release_build_memory()
        self.q_out = self.heads * self.head_dim
        self.kv_out = self.kv_heads * self.head_dim
        self.refresh_lora()

    def refresh_lora(self) -> None:
        """Re-read the live LoRA parameters (after optimizer steps or a checkpoint load)."""
        for layer in self.layers:
            for lin in layer.linears():
                lin.refresh_lora()

    # -------------------------------------------------------------- one batch

    def start(
        self, input_ids: torch.Tensor, valid: torch.Tensor, positions: torch.Tensor, capacity: int
    ) -> torch.Tensor:
        """Prefill left-padded ``input_ids`` ``[B, W]`` (``valid`` marks real tokens) into a cache of
        ``capacity`` positions; returns float32 logits ``[B, V]`` of the last position."""
        batch, width = input_ids.shape
        device, dtype = input_ids.device, self.embed.dtype
        shape = (len(self.layers), batch, self.kv_heads, capacity, self.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.k_layers, self.v_layers = self.k.unbind(0), self.v.unbind(0)
        valid = valid.bool()
        shared = shared_prefix_length(input_ids, valid) if self.shortcuts and self._stats is None else 0
        valid = shared_layout_valid(valid, shared)
        #: the additive mask of every cached position over the whole capacity: the prompt's pads are
        #: masked, every later position is a real token, so a step only slices it (None: no pads at all)
        self.bias: torch.Tensor | None = None
        if not self.shortcuts or not bool(valid.all()):
            self.bias = torch.zeros(batch, 1, 1, capacity, dtype=dtype, device=device)
            self.bias[:, 0, 0, :width].masked_fill_(~valid, torch.finfo(dtype).min)
        self.length = width
        max_pos = int(positions.max()) + capacity - width + 1
        cos, sin = self.rotary(self.embed[:1][None], torch.arange(max_pos, device=device)[None])
        half = self.head_dim // 2
        self.cos, self.signed_sin = cos[0], torch.cat((-sin[0, :, :half], sin[0, :, half:]), dim=-1)
        if shared:
            first = width - int(valid[0].sum())  # row 0's prompt starts there (a row keeps its token count)
            self._prefill_prefix(input_ids[:1, first : first + shared])
        causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()[shared:]
        mask = causal[None, None] & valid[:, None, None, :]
        # a fully padded query row (left pads) would attend to nothing: let it see itself
        mask = mask | torch.eye(width, dtype=torch.bool, device=device)[None, None, shared:]
        hidden = self._forward(input_ids[:, shared:], positions[:, shared:], self._additive(mask), shared)
        if self._stats is not None:  # calibration: the head's input at every position
            self._record(-1, "head", _rms(hidden, self.final_norm, self.final_eps))
        return self._logits(hidden.view(batch, width - shared, -1)[:, -1])

    def _prefill_prefix(self, prefix: torch.Tensor) -> None:
        """The keys and values of ``prefix`` ``[1, P]`` (the tokens every row's prompt starts with),
        computed once in row 0 and copied to every row's cache positions ``[0, P)``."""
        shared = prefix.shape[1]
        k_layers, v_layers = self.k_layers, self.v_layers
        self.k_layers, self.v_layers = self.k[:, :1].unbind(0), self.v[:, :1].unbind(0)
        try:
            causal = torch.ones(shared, shared, dtype=torch.bool, device=prefix.device).tril()[None, None]
            positions = torch.arange(shared, device=prefix.device)[None]
            self._forward(prefix, positions, self._additive(causal), 0)
        finally:
            self.k_layers, self.v_layers = k_layers, v_layers
        self.k[:, 1:, :, :shared] = self.k[:, :1, :, :shared]
        self.v[:, 1:, :, :shared] = self.v[:, :1, :, :shared]

    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Append one token per row at ``positions`` ``[B]``; float32 logits ``[B, V]`` of the next token."""
        at = self.length
        mask = None if self.bias is None else self.bias[..., : at + 1]
        if mask is not None and self.shortcuts:  # padded rows: the grouped layout _attend_one reads, once per step
            batch, groups = tokens.shape[0], self.heads // self.kv_heads
            mask = mask.expand(batch, self.kv_heads, groups, at + 1).reshape(-1, groups, at + 1)
        return self._logits(self._forward(tokens[:, None], positions[:, None], mask, at))

    def finish(self) -> None:
        """Free the batch's KV cache (between ``sample`` calls it would only hold memory)."""
        self.k = self.v = self.bias = None  # type: ignore[assignment]
        self.k_layers = self.v_layers = ()

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the rows ``index`` of the batch (finished rollouts leave)."""
        self.k, self.v = self.k[:, index], self.v[:, index]
        self.k_layers, self.v_layers = self.k.unbind(0), self.v.unbind(0)
        if self.bias is not None:
            self.bias = self.bias[index]

    @torch.no_grad()
    def activation_maxima(self, ids: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Per input channel max |x| of every linear's input over ``ids`` ``[1, L]`` (SmoothQuant calibration);
        one dict per layer (``qkv``, ``o``, ``gate_up``, ``down``) and a last one with ``head``."""
        length = ids.shape[1]
        self._stats = [{} for _ in range(len(self.layers) + 1)]
        valid = torch.ones_like(ids, dtype=torch.bool)
        try:
            self.start(ids, valid, torch.arange(length, device=ids.device)[None], length)
        finally:
            stats, self._stats = self._stats, None
        return stats

    def _record(self, layer: int, name: str, x: torch.Tensor) -> None:
        """Calibration only (a no-op outside :meth:`activation_maxima`): fold ``x`` into the channel maxima."""
        stats = self._stats
        if stats is not None:
            m = x.detach().float().abs().reshape(-1, x.shape[-1]).amax(dim=0)
            stats[layer][name] = torch.maximum(stats[layer][name], m) if name in stats[layer] else m

    # -------------------------------------------------------------- the model

    def _additive(self, mask: torch.Tensor) -> torch.Tensor:
        """A boolean attention mask as the additive float mask SDPA would build in every layer: once per step."""
        dtype = self.embed.dtype
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        h = _rms(hidden, self.final_norm, self.final_eps)
        self._record(-1, "head", h)
        return self.head(h).float()

    def _attend_one(
        self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Attention of one new token per row over the cache, with a mask (padded rows): ``[B, heads, 1, D]``.

        Three batched matmuls over (row, kv head) with the query heads that share a kv head as rows:
        ~30% faster than SDPA's CPU kernel for one query with a mask at batch 8 (which loops over
        rows and heads); ``mask`` is ``[B * kv_heads, heads / kv_heads, length]``."""
        batch, nh, _, hd = q.shape
        nkv, length = keys.shape[1], keys.shape[2]
        scores = torch.baddbmm(
            mask,
            q.reshape(batch * nkv, nh // nkv, hd),
            keys.reshape(batch * nkv, length, hd).transpose(1, 2),
            alpha=self.scale,
        )
        return torch.bmm(scores.softmax(-1), values.reshape(batch * nkv, length, hd)).view(batch, nh, 1, hd)

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None, at: int) -> torch.Tensor:
        """The decoder over ``ids`` ``[B, T]`` at cache positions ``at..at+T``: hidden states ``[B * T, H]``.

        Written for the decode step's per-op cost (one token per row, ~2 us of dispatch per op): rows stay
        2-D between the linears, attention reads the cache through views, nothing is allocated per layer
        beyond the ops' outputs."""
        batch, t = ids.shape
        x = F.embedding(ids.reshape(-1), self.embed)  # [B * T, H]
        cos, sin = self.cos[positions][:, None], self.signed_sin[positions][:, None]  # [B, 1, T, D]
        end = at + t
        hd, nh, nkv, q_out = self.head_dim, self.heads, self.kv_heads, self.q_out
        record = self._stats is not None
        rms = _rms_int8 if self.shortcuts and x.dtype == torch.float32 else _rms
        for i, layer in enumerate(self.layers):
            h = rms(x, layer.norm1, layer.eps1)
            if record:
                self._record(i, "qkv", h)
            if len(layer.qkv) == 1:  # fused q|k|v: rotate q and k in one go
                qkv = layer.qkv[0](h).view(batch, t, nh + 2 * nkv, hd).transpose(1, 2)
                qk = _rotary(qkv[:, : nh + nkv], cos, sin)
                q, k, v = qk[:, :nh], qk[:, nh:], qkv[:, nh + nkv :]
            else:
                q, k, v = (lin(h) for lin in layer.qkv)
                q = _rotary(q.view(batch, t, nh, hd).transpose(1, 2), cos, sin)
                k = _rotary(k.view(batch, t, nkv, hd).transpose(1, 2), cos, sin)
                v = v.view(batch, t, nkv, hd).transpose(1, 2)
            k_cache, v_cache = self.k_layers[i], self.v_layers[i]
            k_cache.narrow(2, at, t).copy_(k)
            v_cache.narrow(2, at, t).copy_(v)
            keys, values = k_cache.narrow(2, 0, end), v_cache.narrow(2, 0, end)
            if mask is not None and mask.dim() == 3:  # a decode step's grouped mask (see step)
                a = self._attend_one(q, keys, values, mask)
            else:
                a = F.scaled_dot_product_attention(
                    q, keys, values, attn_mask=mask, scale=self.scale, enable_gqa=nkv != nh
                )
            a = a.transpose(1, 2).reshape(batch * t, q_out)
            if record:
                self._record(i, "o", a)
            x = x + layer.o(a)
            h = rms(x, layer.norm2, layer.eps2)
            if record:
                self._record(i, "gate_up", h)
            if len(layer.gate_up) == 1:
                gate, up = layer.gate_up[0](h).chunk(2, dim=-1)
            else:
                gate, up = (lin(h) for lin in layer.gate_up)
            m = F.silu(gate).mul_(up)
            if record:
                self._record(i, "down", m)
            x = x + layer.down(m)
        self.length = end
        return x
