"""The linears of the fused decoder (:mod:`.fused_decoder`): a base weight, float or an fbgemm-packed int8
copy, plus the live LoRA update as a low-rank float term; and the int8 copy's build (SmoothQuant scaling,
float outlier channels, per-channel int8 packed in bounded pieces).
"""

from __future__ import annotations

import warnings
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from evsys.backends.local.cpu_features import detect
from evsys.backends.local.memory import release_freed_memory

SMOOTH_ALPHA = 0.7
#: Output rows per fbgemm packed piece (a piece's int8 rows are the build's only large temporary).
PACK_ROWS = 8192
#: Float rows quantized at a time: temporaries this small go back to the allocator's free lists at once.
QUANT_ROWS = 256
#: int8 mode: down_proj's input channels with the largest calibration activations, kept float, and
#: down_proj's SmoothQuant alpha (docs/performance.md has the measurements).
DOWN_OUTLIER_CHANNELS = 64
DOWN_SMOOTH_ALPHA = 0.5

#: fbgemm's AVX2 int8 kernels can saturate 16-bit sums with full-range activations; VNNI ones cannot.
REDUCE_RANGE = detect().int8_reduce_range
#: fbgemm's dynamic-quantization int8 GEMM ``(x, packed, reduce_range)`` (None in a torch built without it):
#: one name looked up per call instead of three attributes, and the one place ``benchmarks/decode_profile.py``
#: wraps to time the GEMMs apart.
int8_gemm: Any = getattr(torch.ops.quantized, "linear_dynamic", None)


def base_and_lora(module: Any) -> tuple[torch.nn.Linear, list[tuple[torch.Tensor, torch.Tensor, float]]]:
    """The plain linear under a peft LoRA layer, and its active adapters as ``(A, B, scaling)``."""
    base = getattr(module, "base_layer", module)
    loras = []
    if base is not module and not getattr(module, "disable_adapters", False):
        for name in module.active_adapters:
            if name in module.lora_A:
                loras.append((module.lora_A[name].weight, module.lora_B[name].weight, float(module.scaling[name])))
    return base, loras


@dataclass
class FusedLinear:
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
    #: int8 with outliers: the input channels in the order the GEMM reads them, the other channels first and
    #: the outlier ones last, so the int8 GEMM reads ``x[:, :gemm_inputs]`` and the float term the rest
    in_order: torch.Tensor | None = None
    gemm_inputs: int = 0
    #: int8: output channels reordered and scaled at build (``y[:, out_order] * out_scale``), so a following
    #: linear's input order and SmoothQuant scale come with this one's output instead of costing two ops
    out_order: torch.Tensor | None = None
    out_scale: torch.Tensor | None = None
    outlier_weight_t: torch.Tensor | None = None  # int8: those channels' float weights, [len(outliers), out]
    prescaled: bool = False  # int8: callers pass x * in_scale (folded into the RMSNorm weight before this linear)

    def refresh_lora(self) -> None:
        parts = [base_and_lora(m)[1] for m in self.sources]
        if not any(parts):
            self.lora_a = self.lora_bt = None
            return
        a_rows, total_rank = [], sum(a.shape[0] for p in parts for a, _, _ in p)
        offset_out, offset_rank = 0, 0
        bt = None
        for module, adapters in zip(self.sources, parts, strict=True):
            out = base_and_lora(module)[0].out_features
            for a, b, scale in adapters:
                a_rows.append(a.detach())
                if bt is None:
                    bt = torch.zeros(total_rank, self.out_features, dtype=b.dtype, device=b.device)
                r = a.shape[0]
                bt[offset_rank : offset_rank + r, offset_out : offset_out + out] = (b.detach() * scale).T
                offset_rank += r
            offset_out += out
        lora_a = torch.cat(a_rows) if a_rows else None
        if self.prescaled and lora_a is not None and self.in_scale is not None:
            # A x = (A / in_scale)(x * in_scale): x arrives scaled (and reordered, with outliers last)
            if self.in_order is not None:
                lora_a = lora_a[:, self.in_order]
                lora_a[:, : self.gemm_inputs] /= self.in_scale
            else:
                lora_a = lora_a / self.in_scale
        if bt is not None and self.out_order is not None:
            bt = bt[:, self.out_order]
            if self.out_scale is not None:
                bt *= self.out_scale
        self.lora_a, self.lora_bt = lora_a, bt

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[rows, in]`` through the base weights plus the low-rank update: ``[rows, out]``.

        The low-rank and outlier terms are added in place by ``addmm_`` (one op each): a decode step runs
        this ~120 times per token, so every op counts."""
        if self.packed is not None:
            rest = None
            if self.in_order is not None:  # outliers last: the GEMM's channels, then the float ones
                if not self.prescaled:
                    x = x.index_select(1, self.in_order)
                xq, rest = x[:, : self.gemm_inputs], x[:, self.gemm_inputs :]
                if not self.prescaled and self.in_scale is not None:
                    xq = xq * self.in_scale
            else:
                xq = x if (self.in_scale is None or self.prescaled) else x * self.in_scale
            row_max = None
            if xq.shape[0] > 1:
                # fbgemm quantizes the activations with one range for the whole matrix: scaling each row
                # to max |x| = 1 first (and back after) gives every row (token) its own range
                row_max = xq.abs().amax(dim=1, keepdim=True).clamp_(min=1e-12)
                xq = xq / row_max
            if len(self.packed) == 1:
                y = int8_gemm(xq, self.packed[0], REDUCE_RANGE)
            else:
                y = torch.cat([int8_gemm(xq, p, REDUCE_RANGE) for p in self.packed], dim=-1)
            if row_max is not None:
                y.mul_(row_max)
            if rest is not None:
                y.addmm_(rest, self.outlier_weight_t)
            if self.bias is not None:
                y.add_(self.bias)
        else:
            y = F.linear(x, self.weight, self.bias)
        if self.lora_a is not None and self.lora_bt is not None:
            low = F.linear(x if x.dtype == self.lora_a.dtype else x.to(self.lora_a.dtype), self.lora_a)
            if low.dtype == y.dtype:
                y.addmm_(low, self.lora_bt)
            else:
                y = y + (low @ self.lora_bt).to(y.dtype)
        return y


def row_block(weights: list[torch.Tensor], start: int, stop: int) -> torch.Tensor:
    """Rows ``[start, stop)`` of the row-wise concatenation of ``weights``, as float32, without building it."""
    parts, offset = [], 0
    for w in weights:
        lo, hi = max(start, offset), min(stop, offset + w.shape[0])
        if lo < hi:
            parts.append(w[lo - offset : hi - offset].detach())
        offset += w.shape[0]
    return (parts[0] if len(parts) == 1 else torch.cat(parts)).float()


def select_rows(weights: list[torch.Tensor], index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` of the row-wise concatenation of ``weights``, as float32, without building it."""
    out = torch.empty(len(index), weights[0].shape[1], dtype=torch.float32)
    offset = 0
    for w in weights:
        inside = (index >= offset) & (index < offset + w.shape[0])
        if bool(inside.any()):
            out[inside] = w.detach()[index[inside] - offset].float()
        offset += w.shape[0]
    return out


def pack_int8(
    weights: list[torch.Tensor],
    column_scale: torch.Tensor | None = None,
    packer: Executor | None = None,
    columns: torch.Tensor | None = None,
    row_order: torch.Tensor | None = None,
    row_scale: torch.Tensor | None = None,
) -> list[Any]:
    """Per-output-channel symmetric int8 quantization of ``cat(weights) * column_scale`` (per input column),
    prepacked for fbgemm's dynamic linear in pieces of at most ``PACK_ROWS`` output rows.

    Peak memory is what this is written for: the float weights are read ``QUANT_ROWS`` rows at a time
    (never concatenated or copied whole), and each piece's int8 rows live only until they are packed, so
    building the copy of a 49k-row output head adds a few MB over the packed result, not 3x it. With a
    ``packer`` (one dedicated thread), fbgemm allocates the packed weights from that thread's malloc arena,
    apart from this thread's short-lived temporaries; interleaved in one heap, the freed temporaries leave
    holes that small live blocks pin (~20 MiB more resident for SmolLM2-135M, docs/performance.md).

    ``columns`` keeps only those input columns, in that order; ``row_order`` takes the output rows in that order
    and ``row_scale`` multiplies them (per-channel quantization: the int8 rows stay the same, their scales move)."""
    total = len(row_order) if row_order is not None else sum(w.shape[0] for w in weights)
    cols = len(columns) if columns is not None else weights[0].shape[1]
    if columns is not None and column_scale is not None:
        column_scale = column_scale[columns]
    packed = []
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for piece in range(0, total, PACK_ROWS):
            rows = min(PACK_ROWS, total - piece)
            q = torch.empty((rows, cols), dtype=torch.int8)
            scales = torch.empty(rows, dtype=torch.float64)
            for start in range(0, rows, QUANT_ROWS):
                stop = min(start + QUANT_ROWS, rows)
                a, b = piece + start, piece + stop
                w = row_block(weights, a, b) if row_order is None else select_rows(weights, row_order[a:b])
                if columns is not None:
                    w = w[:, columns]
                if column_scale is not None:
                    w = w * column_scale[None, :]
                if row_scale is not None:
                    w = w * row_scale[a:b, None]
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


def smoothing(
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
            block = row_block(weights, start, min(start + QUANT_ROWS, total))
            w_max = torch.maximum(w_max, block.abs().amax(dim=0))
    scale = act_max.clamp(min=1e-5).pow(alpha) / w_max.clamp(min=1e-5).pow(1 - alpha)
    return scale.clamp(min=1e-5)


def build_linear(
    modules: list[Any],
    int8: bool,
    act_max: torch.Tensor | None = None,
    outliers: int = 0,
    alpha: float = SMOOTH_ALPHA,
    packer: Executor | None = None,
    out_order: torch.Tensor | None = None,
    out_scale: torch.Tensor | None = None,
) -> FusedLinear:
    """The rollout linear over ``modules`` (fused along the output dimension when int8); with int8 and
    calibration maxima ``act_max``, SmoothQuant scaling, and the ``outliers`` input channels with the
    largest activations kept in float, ordered last (``packer``: see :func:`pack_int8`; ``out_order`` and
    ``out_scale``: see :class:`FusedLinear`)."""
    bases = [base_and_lora(m)[0] for m in modules]
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
    lin = FusedLinear(out_features=out, bias=bias, sources=list(modules), out_order=out_order, out_scale=out_scale)
    if int8:
        weights = [b.weight for b in bases]
        column_scale = smoothing(act_max, weights, alpha)
        columns = None
        if outliers and act_max is not None:
            # the input channels with the largest activations skip int8: float columns, ordered last
            # (at least one channel stays int8, so the GEMM has an input even in a tiny model)
            lin.outliers = act_max.topk(min(outliers, act_max.numel() - 1)).indices.sort().values
            lin.outlier_weight_t = torch.cat([w.detach()[:, lin.outliers] for w in weights]).float().T.contiguous()
            keep = torch.ones_like(act_max, dtype=torch.bool)
            keep[lin.outliers] = False
            columns = torch.arange(act_max.numel())[keep]
            lin.in_order, lin.gemm_inputs = torch.cat((columns, lin.outliers)), len(columns)
        lin.packed = pack_int8(weights, column_scale, packer, columns, out_order, out_scale)
        if column_scale is not None:
            lin.in_scale = 1.0 / column_scale.clamp(min=1e-30)
            if columns is not None:
                lin.in_scale = lin.in_scale[columns]
        if lin.bias is not None:
            lin.bias = lin.bias.float()
            if out_order is not None:
                lin.bias = lin.bias[out_order] * (out_scale if out_scale is not None else 1.0)
    else:
        if len(bases) > 1:  # no fusion in float: a fused copy would double the resident weights
            raise ValueError("float linears are not fused")
        lin.weight = bases[0].weight
    return lin


def gated_input_for(down: FusedLinear) -> dict[str, torch.Tensor]:
    """The ``out_order`` and ``out_scale`` of a fused gate|up linear that hand ``down`` (int8, outliers ordered
    last) its input ready: both halves in ``down``'s channel order, up's rows times ``down``'s SmoothQuant
    input scale, so ``silu(gate) * up`` needs neither a reorder nor a scaling op; marks ``down`` prescaled.
    Empty (nothing to fold) without outliers or scale."""
    if down.in_order is None or down.in_scale is None:
        return {}
    width = len(down.in_order)
    scale = torch.ones(width)
    scale[: down.gemm_inputs] = down.in_scale
    down.prescaled = True
    return {
        "out_order": torch.cat((down.in_order, width + down.in_order)),
        "out_scale": torch.cat((torch.ones(width), scale)),
    }


def release_build_memory() -> None:
    """Hand the float temporaries of the int8 build back to the OS (glibc keeps freed blocks otherwise)."""
    import gc

    gc.collect()
    release_freed_memory()
