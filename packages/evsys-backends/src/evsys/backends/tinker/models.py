"""Base models the Tinker service trains, as of the tinker 0.38 SDK and the Tinker docs' model lineup.

The list warns (never fails) in ``evsys validate --deep``: the service adds models over time, and
``RestClient().get_server_capabilities()`` is the live source of truth.
"""

from __future__ import annotations

from typing import NamedTuple

SUPPORTED_MODELS: tuple[str, ...] = (
    # Qwen 3.5 (vision-language; text works the same)
    "Qwen/Qwen3.5-4B",
    "Qwen/Qwen3.5-27B",
    "Qwen/Qwen3.5-35B-A3B",
    "Qwen/Qwen3.5-397B-A17B",
    # Qwen 3
    "Qwen/Qwen3-VL-30B-A3B-Instruct",
    "Qwen/Qwen3-VL-235B-A22B-Instruct",
    "Qwen/Qwen3-235B-A22B-Instruct-2507",
    "Qwen/Qwen3-30B-A3B-Instruct-2507",
    "Qwen/Qwen3-30B-A3B",
    "Qwen/Qwen3-30B-A3B-Base",
    "Qwen/Qwen3-32B",
    "Qwen/Qwen3-8B",
    "Qwen/Qwen3-8B-Base",
    "Qwen/Qwen3-4B-Instruct-2507",
    # Meta Llama
    "meta-llama/Llama-3.3-70B-Instruct",
    "meta-llama/Llama-3.1-70B",
    "meta-llama/Llama-3.1-8B",
    "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Llama-3.2-3B",
    "meta-llama/Llama-3.2-1B",
    # OpenAI gpt-oss
    "openai/gpt-oss-120b",
    "openai/gpt-oss-20b",
    # DeepSeek
    "deepseek-ai/DeepSeek-V3.1",
    "deepseek-ai/DeepSeek-V3.1-Base",
    # Moonshot Kimi
    "moonshotai/Kimi-K2-Thinking",
    "moonshotai/Kimi-K2.5",
)


class ModelLimits(NamedTuple):
    """What the service accepts for one model: ids below ``vocab_size``, sequences of at most
    ``context_length`` tokens, LoRA ranks up to ``max_lora_rank``."""

    vocab_size: int
    context_length: int
    max_lora_rank: int


# Per family, from the models' published configs (``vocab_size``, ``max_position_embeddings``); the
# service may serve a shorter context (``get_server_capabilities`` says). Mixture-of-experts models
# take LoRA ranks up to 32 (the service's error: "rank 128 exceeds max LoRA rank 32", tinker-cookbook
# issue 9); dense ones up to 128.
_FAMILY_LIMITS: tuple[tuple[str, ModelLimits], ...] = (
    ("Qwen/Qwen3.5-", ModelLimits(vocab_size=248_320, context_length=262_144, max_lora_rank=128)),
    ("Qwen/Qwen3-", ModelLimits(vocab_size=151_936, context_length=32_768, max_lora_rank=128)),
    ("meta-llama/Llama-3", ModelLimits(vocab_size=128_256, context_length=131_072, max_lora_rank=128)),
    ("openai/gpt-oss-", ModelLimits(vocab_size=201_088, context_length=131_072, max_lora_rank=128)),
    ("deepseek-ai/DeepSeek-V3", ModelLimits(vocab_size=129_280, context_length=131_072, max_lora_rank=32)),
    ("moonshotai/Kimi-K2", ModelLimits(vocab_size=163_840, context_length=262_144, max_lora_rank=32)),
)
_MOE_MARKERS = ("-A3B", "-A17B", "-A22B", "gpt-oss-", "DeepSeek-V3", "Kimi-K2")


def model_limits(model_name: str) -> ModelLimits | None:
    """The request limits of ``model_name`` (``None`` for a model not in the catalog)."""
    for prefix, limits in _FAMILY_LIMITS:
        if model_name.startswith(prefix):
            moe = any(marker in model_name for marker in _MOE_MARKERS)
            return limits._replace(max_lora_rank=32) if moe else limits
    return None
