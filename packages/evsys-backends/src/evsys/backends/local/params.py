"""Params of the ``local`` backend (``backend.params`` in a run config). Imports no torch."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from evsys.schema.config import StrictModel

DEFAULT_TARGET_MODULES: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LocalBackendParams(StrictModel):
    """How the local backend (torch + transformers + peft) loads, adapts and runs the model."""

    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Where the model runs; 'auto' is 'cuda' when a GPU is visible, else 'cpu'."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto",
        description="Weight dtype of the base model; 'auto' is bfloat16 on CUDA and float32 on CPU. LoRA weights stay float32.",
    )
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA input during training.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        default_factory=lambda: list(DEFAULT_TARGET_MODULES),
        description=(
            "Module names that get a LoRA adapter: by default every linear layer of attention and MLP "
            "(q/k/v/o_proj, gate/up/down_proj, the Llama/Qwen/Mistral names); 'all-linear' lets peft pick "
            "every linear layer except the output head (use it for other architectures)."
        ),
    )
    micro_batch_size: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Sequences per forward pass in forward_backward, topk_logprobs and sample; gradients accumulate "
            "across micro-batches. null: the whole batch at once. Lower it when memory runs short."
        ),
    )
    logits_chunk_size: int = Field(
        default=1024,
        ge=1,
        description="Token positions sent through the output head at once (bounds the [positions, vocab] logits in memory).",
    )
    gradient_checkpointing: bool | Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        default="auto",
        description=(
            "Recompute activations in the backward pass instead of keeping them: less memory, more compute. "
            "true: every decoder layer (about 30% more compute); an integer N: the first N decoder layers only, "
            "the others keep their activations (a dial between the two; 0 is false). 'auto': with int8 rollout "
            "weights, each forward_backward recomputes just enough of the first layers to make room for the "
            "int8 copy (all of them at small batches); otherwise none."
        ),
    )
    attn_implementation: Literal["auto", "sdpa", "eager"] = Field(
        default="auto", description="Attention kernel; 'auto' lets transformers choose (sdpa when available)."
    )
    rollout_engine: Literal["auto", "fused", "transformers"] = Field(
        default="auto",
        description=(
            "Decode loop of sample: 'transformers' is transformers' own generate (any architecture); 'fused' "
            "is EvSys' lean Llama/Mistral/Qwen2 decoder (static KV cache, LoRA added as a low-rank update; "
            "faster on CPU, and the one that reads int8 rollout weights); 'auto' is 'fused' where the model "
            "supports it, else 'transformers'. Both draw the same tokens from the same seed."
        ),
    )
    rollout_weights: Literal["auto", "model", "int8"] = Field(
        default="auto",
        description=(
            "Base weights read by sample: 'model' (the training weights; sampler logprobs equal the policy's "
            "up to float rounding) or 'int8' (CPU with AVX2, fused engine: a per-channel int8 copy of the frozen "
            "base linears, ~4x less memory traffic per token, +~28% of the float32 model in memory; the LoRA "
            "update stays float32; sampler logprobs differ from the float32 policy's by a measured tolerance, "
            "see docs/performance.md). 'auto': 'int8' on a CPU with AVX2 when the fused engine runs the model, "
            "else 'model'; the run logs the choice and resolved_config.json records it."
        ),
    )

    cpu_threads: int | None = Field(
        default=None,
        ge=1,
        description=(
            "torch intra-op threads on CPU (torch.set_num_threads, process-wide); null: torch's default "
            "(one per core). Use fewer when other processes share the cores."
        ),
    )

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, list) and not value:
            raise ValueError("target_modules must name at least one module (or be 'all-linear')")
        return value

    @model_validator(mode="before")
    @classmethod
    def _lora_alpha_moved(cls, data: object) -> object:
        if isinstance(data, dict) and "lora_alpha" in data:
            raise ValueError("lora_alpha is set as algorithm.params.lora_alpha, next to lora_rank (one place for the adapter shape, whatever the backend)")
        return data

    @field_validator("gradient_checkpointing", mode="before")
    @classmethod
    def _checkpointing_setting(cls, value: object) -> object:
        # one message for the bool-or-count union (pydantic would report each branch on its own line)
        if value != "auto" and not isinstance(value, bool) and (not isinstance(value, int) or value < 0):
            raise ValueError(
                f"gradient_checkpointing must be 'auto', true, false or a number of layers >= 0, got {value!r}"
            )
        return value

