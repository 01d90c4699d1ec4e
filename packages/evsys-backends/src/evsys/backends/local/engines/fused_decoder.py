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

import warnings
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from evsys.backends.local.cpu_features import detect
from evsys.backends.local.cpu_features import int8_available as int8_available  # re-exported
from evsys.backends.local.memory import release_freed_memory

SUPPORTED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2"})
_ATTN = ("q_proj", "k_proj", "v_proj")
SMOOTH_ALPHA = 0.7
#: Output rows per fbgemm packed piece (a piece's int8 rows are the build's only large temporary).
PACK_ROWS = 8192
#: Float rows quantized at a time: temporaries this small go back to the allocator's free lists at once.
QUANT_ROWS = 256
#: int8 mode: down_proj's input channels with the largest calibration activations, kept float, and
#: down_proj's SmoothQuant alpha (docs/performance.md has the measurements).
DOWN_OUTLIER_CHANNELS = 64
DOWN_SMOOTH_ALPHA = 0.5
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


#: fbgemm's AVX2 int8 kernels can saturate 16-bit sums with full-range activations; VNNI ones cannot.
REDUCE_RANGE = detect().int8_reduce_range


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


def _base_and_lora(module: Any) -> tuple[torch.nn.Linear, list[tuple[torch.Tensor, torch.Tensor, float]]]:
    """The plain linear under a peft LoRA layer, and its active adapters as ``(A, B, scaling)``."""
    base = getattr(module, "base_layer", module)
    loras = []
    if base is not module and not getattr(module, "disable_adapters", False):
        for name in module.active_adapters:
            if name in module.lora_A:
                loras.append((module.lora_A[name].weight, module.lora_B[name].weight, float(module.scaling[name])))
    return base, loras


@dataclass
class _Linear:
    """One (possibly fused) linear: base weights (float or int8-packed) plus a low-rank float update."""

    out_features: int
    weight: torch.Tensor | None = None  # float weight [out, in] (weights="model")
    packed: Any = None  # fbgemm packed int8 weight (weights="int8")
    bias: torch.Tensor | None = None
    lora_a: torch.Tensor | None = None  # [r_total, in]
    lora_bt: torch.Tensor | None = None  # [r_total, out] (B transposed), scaling folded in
    sources: list[Any] = field(default_factory=list)  # the peft modules, to refresh the LoRA part
    in_scale: torch.Tensor | None = None  # int8: x * in_scale feeds the int8 GEMM (1/smooth; 0 on outlier channels)
    outliers: torch.Tensor | None = None  # int8: input channels computed in float instead (LLM.int8-style)
    outlier_weight_t: torch.Tensor | None = None  # int8: those channels' float weights, [len(outliers), out]
    prescaled: bool = False  # int8: callers pass x * in_scale (folded into the RMSNorm weight before this linear)

    def refresh_lora(self) -> None:
        parts = [_base_and_lora(m)[1] for m in self.sources]
        if not any(parts):
            self.lora_a = self.lora_bt = None
            return
        a_rows, total_rank = [], sum(a.shape[0] for p in parts for a, _, _ in p)
        offset_out, offset_rank = 0, 0
        bt = None
        for module, adapters in zip(self.sources, parts, strict=True):
            out = _base_and_lora(module)[0].out_features
            for a, b, scale in adapters:
                a_rows.append(a.detach())
                if bt is None:
                    bt = torch.zeros(total_rank, self.out_features, dtype=b.dtype, device=b.device)
                r = a.shape[0]
                bt[offset_rank : offset_rank + r, offset_out : offset_out + out] = (b.detach() * scale).T
                offset_rank += r
            offset_out += out
        self.lora_a = torch.cat(a_rows) if a_rows else None
        if self.prescaled and self.lora_a is not None and self.in_scale is not None:
            self.lora_a = self.lora_a / self.in_scale  # A x = (A / in_scale)(x * in_scale): x arrives scaled
        self.lora_bt = bt

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        # rows in 2-D throughout: the low-rank and outlier terms are added in place by addmm_ (one op each)
        flat = x.reshape(-1, x.shape[-1])
        if self.packed is not None:
            xq = flat if (self.in_scale is None or self.prescaled) else flat * self.in_scale
            row_max = None
            if xq.shape[0] > 1:
                # fbgemm quantizes the activations with one range for the whole matrix: scaling each row
                # to max |x| = 1 first (and back after) gives every row (token) its own range
                row_max = xq.abs().amax(dim=1, keepdim=True).clamp_(min=1e-12)
                xq = xq / row_max
            if len(self.packed) == 1:
                y = torch.ops.quantized.linear_dynamic(xq, self.packed[0], REDUCE_RANGE)
            else:
                y = torch.cat([torch.ops.quantized.linear_dynamic(xq, p, REDUCE_RANGE) for p in self.packed], dim=-1)
            if row_max is not None:
                y.mul_(row_max)
            if self.outlier_weight_t is not None:
                y.addmm_(flat.index_select(-1, self.outliers), self.outlier_weight_t)
            if self.bias is not None:
                y.add_(self.bias)
        else:
            y = F.linear(flat, self.weight, self.bias)
        if self.lora_a is not None and self.lora_bt is not None:
            low = F.linear(flat if flat.dtype == self.lora_a.dtype else flat.to(self.lora_a.dtype), self.lora_a)
            if low.dtype == y.dtype:
                y.addmm_(low, self.lora_bt)
            else:
                y = y + (low @ self.lora_bt).to(y.dtype)
        return y.view(*x.shape[:-1], self.out_features)


def _row_block(weights: list[torch.Tensor], start: int, stop: int) -> torch.Tensor:
    """Rows ``[start, stop)`` of the row-wise concatenation of ``weights``, as float32, without building it."""
    parts, offset = [], 0
    for w in weights:
        lo, hi = max(start, offset), min(stop, offset + w.shape[0])
        if lo < hi:
            parts.append(w[lo - offset : hi - offset].detach())
        offset += w.shape[0]
    return (parts[0] if len(parts) == 1 else torch.cat(parts)).float()


def _pack_int8(
    weights: list[torch.Tensor], column_scale: torch.Tensor | None = None, packer: Executor | None = None
) -> list[Any]:
    """Per-output-channel symmetric int8 quantization of ``cat(weights) * column_scale`` (per input column),
    prepacked for fbgemm's dynamic linear in pieces of at most ``PACK_ROWS`` output rows.

    Peak memory is what this is written for: the float weights are read ``QUANT_ROWS`` rows at a time
    (never concatenated or copied whole), and each piece's int8 rows live only until they are packed, so
    building the copy of a 49k-row output head adds a few MB over the packed result, not 3x it. With a
    ``packer`` (one dedicated thread), fbgemm allocates the packed weights from that thread's malloc arena,
    apart from this thread's short-lived temporaries; interleaved in one heap, the freed temporaries leave
    holes that small live blocks pin (~20 MiB more resident for SmolLM2-135M, docs/performance.md)."""
    total, cols = sum(w.shape[0] for w in weights), weights[0].shape[1]
    packed = []
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for piece in range(0, total, PACK_ROWS):
            rows = min(PACK_ROWS, total - piece)
            q = torch.empty((rows, cols), dtype=torch.int8)
            scales = torch.empty(rows, dtype=torch.float64)
            for start in range(0, rows, QUANT_ROWS):
                stop = min(start + QUANT_ROWS, rows)
                w = _row_block(weights, piece + start, piece + stop)
                if column_scale is not None:
                    w = w * column_scale[None, :]
                scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
                q[start:stop] = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
                scales[start:stop] = scale.double()
            qt = torch._make_per_channel_quantized_tensor(q, scales, torch.zeros(rows, dtype=torch.long), 0)
            del q
            if packer is None:
                packed.append(torch.ops.quantized.linear_prepack(qt, None))
            else:
                packed.append(packer.submit(torch.ops.quantized.linear_prepack, qt, None).result())
            del qt
    return packed


def _smoothing(
    act_max: torch.Tensor | None, weights: list[torch.Tensor], alpha: float = SMOOTH_ALPHA
) -> torch.Tensor | None:
    """SmoothQuant's per-input-channel scale ``max|x_j|^a / max|W_j|^(1-a)`` (None without statistics);
    ``W`` is the row-wise concatenation of ``weights``, read ``QUANT_ROWS`` rows at a time."""
    if act_max is None:
        return None
    total = sum(w.shape[0] for w in weights)
    w_max = torch.zeros(weights[0].shape[1], dtype=torch.float32)
    with torch.no_grad():
        for start in range(0, total, QUANT_ROWS):
            block = _row_block(weights, start, min(start + QUANT_ROWS, total))
            w_max = torch.maximum(w_max, block.abs().amax(dim=0))
    scale = act_max.clamp(min=1e-5).pow(alpha) / w_max.clamp(min=1e-5).pow(1 - alpha)
    return scale.clamp(min=1e-5)


def _build_linear(
    modules: list[Any],
    int8: bool,
    act_max: torch.Tensor | None = None,
    outliers: int = 0,
    alpha: float = SMOOTH_ALPHA,
    packer: Executor | None = None,
) -> _Linear:
    """The rollout linear over ``modules`` (fused along the output dimension when int8); with int8 and
    calibration maxima ``act_max``, SmoothQuant scaling, and the ``outliers`` input channels with the
    largest activations kept in float (``packer``: see :func:`_pack_int8`)."""
    bases = [_base_and_lora(m)[0] for m in modules]
    out = sum(b.out_features for b in bases)
    biases = [b.bias for b in bases]
    bias = None
    if any(x is not None for x in biases):
        bias = torch.cat(
            [
                (x.detach() if x is not None else torch.zeros(b.out_features, dtype=b.weight.dtype))
                for x, b in zip(biases, bases, strict=True)
            ]
        )
    lin = _Linear(out_features=out, bias=bias, sources=list(modules))
    if int8:
        weights = [b.weight for b in bases]
        column_scale = _smoothing(act_max, weights, alpha)
        if outliers and act_max is not None:
            # the input channels with the largest activations skip int8: float columns, zeros in the int8 copy
            lin.outliers = act_max.topk(min(outliers, act_max.numel())).indices.sort().values
            lin.outlier_weight_t = torch.cat([w.detach()[:, lin.outliers] for w in weights]).float().T.contiguous()
            keep = torch.ones_like(act_max)
            keep[lin.outliers] = 0.0
            column_scale = keep if column_scale is None else column_scale * keep
        lin.packed = _pack_int8(weights, column_scale, packer)
        if column_scale is not None:
            inverse = torch.where(column_scale > 0, 1.0 / column_scale.clamp(min=1e-30), torch.zeros_like(column_scale))
            lin.in_scale = inverse
        if lin.bias is not None:
            lin.bias = lin.bias.float()
    else:
        if len(bases) > 1:  # no fusion in float: a fused copy would double the resident weights
            raise ValueError("float linears are not fused")
        lin.weight = bases[0].weight
    return lin


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
        if int8:
            self.qkv: list[_Linear] = [_build_linear([getattr(attn, n) for n in _ATTN], True, stats.get("qkv"), packer=packer)]
            self.gate_up: list[_Linear] = [_build_linear([getattr(mlp, n) for n in _MLP], True, stats.get("gate_up"), packer=packer)]
            # SmoothQuant's input scaling folded into the RMSNorm weights that feed these two linears
            qkv, gate_up = self.qkv[0], self.gate_up[0]
            if qkv.in_scale is not None:
                self.norm1, qkv.prescaled = self.norm1 * qkv.in_scale, True
            if gate_up.in_scale is not None:
                self.norm2, gate_up.prescaled = self.norm2 * gate_up.in_scale, True
        else:
            self.qkv = [_build_linear([getattr(attn, n)], False) for n in _ATTN]
            self.gate_up = [_build_linear([getattr(mlp, n)], False) for n in _MLP]
        self.o = _build_linear([attn.o_proj], int8, stats.get("o"), packer=packer)
        # down_proj's input (silu(gate) * up) has a few channels with outliers that per-tensor int8
        # activations cannot carry: in int8 mode those channels stay float, the rest is int8
        self.down = _build_linear(
            [mlp.down_proj], int8, stats.get("down"), DOWN_OUTLIER_CHANNELS, DOWN_SMOOTH_ALPHA, packer
        )

    def linears(self) -> list[_Linear]:
        return [*self.qkv, *self.gate_up, self.o, self.down]


def _release_build_memory() -> None:
    """Hand the float temporaries of the int8 build back to the OS (glibc keeps freed blocks otherwise)."""
    import gc

    gc.collect()
    release_freed_memory()


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Llama's RMSNorm (normalized in float32, then scaled by ``weight``)."""
    if x.dtype == torch.float32 and weight.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def _rotary(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """``x * cos + rotate_half(x) * sin`` in three ops: ``rotate_half(x) * sin == roll(x) * signed_sin``,
    where ``signed_sin`` is ``sin`` with its first half negated."""
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), signed_sin)


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
            self.head = _build_linear([head], self.int8, stats[-1].get("head") if stats else None, packer=packer)
        self.head.sources = []  # the output head never carries LoRA here
        if self.int8:
            _release_build_memory()
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
        self.valid = torch.zeros(batch, capacity, dtype=torch.bool, device=device)
        self.valid[:, :width] = valid.bool()
        self.length = width
        max_pos = int(positions.max()) + capacity - width + 1
        cos, sin = self.rotary(self.embed[:1][None], torch.arange(max_pos, device=device)[None])
        half = self.head_dim // 2
        self.cos, self.signed_sin = cos[0], torch.cat((-sin[0, :, :half], sin[0, :, half:]), dim=-1)
        causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
        mask = causal[None, None] & self.valid[:, None, None, :width]
        # a fully padded query row (left pads) would attend to nothing: let it see itself
        mask = mask | torch.eye(width, dtype=torch.bool, device=device)[None, None]
        hidden = self._forward(input_ids, positions, self._additive(mask), 0)
        if self._stats is not None:  # calibration: the head's input at every position
            self._record(-1, "head", _rms(hidden, self.final_norm, self.final_eps))
        return self._logits(hidden[:, -1])

    def step(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Append one token per row at ``positions`` ``[B]``; float32 logits ``[B, V]`` of the next token."""
        at = self.length
        self.valid[:, at] = True
        mask = self.valid[:, None, None, : at + 1]
        hidden = self._forward(tokens[:, None], positions[:, None], self._additive(mask), at)
        return self._logits(hidden[:, -1])

    def finish(self) -> None:
        """Free the batch's KV cache (between ``sample`` calls it would only hold memory)."""
        self.k = self.v = self.valid = None  # type: ignore[assignment]
        self.k_layers = self.v_layers = ()

    def keep(self, index: torch.Tensor) -> None:
        """Keep only the rows ``index`` of the batch (finished rollouts leave)."""
        self.k, self.v = self.k[:, index], self.v[:, index]
        self.k_layers, self.v_layers = self.k.unbind(0), self.v.unbind(0)
        self.valid = self.valid[index]

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

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, at: int) -> torch.Tensor:
        batch, t = ids.shape
        x = F.embedding(ids, self.embed)
        cos, sin = self.cos[positions][:, None], self.signed_sin[positions][:, None]  # [B, 1, T, D]
        end = at + t
        hd, nh, nkv = self.head_dim, self.heads, self.kv_heads
        for i, layer in enumerate(self.layers):
            h = _rms(x, layer.norm1, layer.eps1)
            self._record(i, "qkv", h)
            if len(layer.qkv) == 1:  # fused q|k|v: rotate q and k in one go
                qkv = layer.qkv[0](h)
                qk = _rotary(qkv[..., : self.q_out + self.kv_out].view(batch, t, nh + nkv, hd).transpose(1, 2), cos, sin)
                q, k = qk[:, :nh], qk[:, nh:]
                v = qkv[..., self.q_out + self.kv_out :].view(batch, t, nkv, hd).transpose(1, 2)
            else:
                q, k, v = (lin(h) for lin in layer.qkv)
                q = _rotary(q.view(batch, t, nh, hd).transpose(1, 2), cos, sin)
                k = _rotary(k.view(batch, t, nkv, hd).transpose(1, 2), cos, sin)
                v = v.view(batch, t, nkv, hd).transpose(1, 2)
            k_cache, v_cache = self.k_layers[i], self.v_layers[i]
            k_cache[:, :, at:end] = k
            v_cache[:, :, at:end] = v
            a = F.scaled_dot_product_attention(
                q,
                k_cache[:, :, :end],
                v_cache[:, :, :end],
                attn_mask=mask,
                scale=self.scale,
                enable_gqa=nkv != nh,
            )
            a = a.transpose(1, 2).reshape(batch, t, nh * hd)
            self._record(i, "o", a)
            x = x + layer.o(a)
            h = _rms(x, layer.norm2, layer.eps2)
            self._record(i, "gate_up", h)
            if len(layer.gate_up) == 1:
                gate, up = layer.gate_up[0](h).chunk(2, dim=-1)
            else:
                gate, up = (lin(h) for lin in layer.gate_up)
            m = F.silu(gate).mul_(up)
            self._record(i, "down", m)
            x = x + layer.down(m)
        self.length = end
        return x
