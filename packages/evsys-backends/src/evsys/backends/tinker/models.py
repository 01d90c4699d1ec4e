"""The models Tinker serves: the service's own list when a key has fetched it (cached), else a static list.

The live source is ``RestClient().get_server_capabilities()`` (tinker 0.38: ``model_name``,
``max_context_length``, ``trainable``, ``sampleable`` per model); :mod:`.catalog` fetches and caches it.
The static list below is the offline fallback: Tinker's lineup as of 2026-12-01, after the
retirements on its Model Deprecations page (2026-06-12, 2026-07-12, 2026-09-02). Its context windows
are the models' native windows (an upper bound; the service's ``max_context_length`` replaces them),
``None`` where none is published. Imports no SDK.

Each entry also has the request limits the service checks and ``get_server_capabilities`` does not
report (:class:`ModelLimits`: vocabulary size and largest LoRA rank, per model family, from the
models' published configs); :func:`evsys.backends.tinker.catalog.model_limits` joins them with the
catalog's context window for the simulated service (``--dry-run``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True)
class TinkerModel:
    """One model Tinker serves."""

    name: str
    max_context_length: int | None
    trainable: bool = True
    sampleable: bool = True


@dataclass(frozen=True)
class Retirement:
    """A model Tinker retired: when, and what its deprecations page recommends instead."""

    date: str
    replacement: str


STATIC_MODELS: tuple[TinkerModel, ...] = (
    # Qwen 3.5 / 3.6 / 3.8 (vision-language; text works the same)
    TinkerModel("Qwen/Qwen3.5-4B", 262144),
    TinkerModel("Qwen/Qwen3.5-9B", 262144),
    TinkerModel("Qwen/Qwen3.5-397B-A17B", 262144),
    TinkerModel("Qwen/Qwen3.5-9B-Base", 262144),
    TinkerModel("Qwen/Qwen3.5-35B-A3B-Base", 262144),
    TinkerModel("Qwen/Qwen3.6-35B-A3B", 262144),
    TinkerModel("Qwen/Qwen3.8-27B", 262144),
    # Qwen 3
    TinkerModel("Qwen/Qwen3-8B", 40960),
    # OpenAI gpt-oss
    TinkerModel("openai/gpt-oss-120b", 131072),
    TinkerModel("openai/gpt-oss-20b", 131072),
    # DeepSeek
    TinkerModel("deepseek-ai/DeepSeek-V3.1", 131072),
    # Moonshot Kimi
    TinkerModel("moonshotai/Kimi-K2.6", 262144),
    # NVIDIA Nemotron
    TinkerModel("nvidia/NVIDIA-Nemotron-3-Super-120B-A12B-BF16", None),
)


class ModelLimits(NamedTuple):
    """What the service accepts for one model: ids below ``vocab_size``, sequences of at most
    ``context_length`` tokens (None: no published window, not checked), LoRA ranks up to ``max_lora_rank``."""

    vocab_size: int
    context_length: int | None
    max_lora_rank: int


# Per family, from the models' published configs (``vocab_size``); the context window here is only
# the fallback where the catalog has none. Mixture-of-experts models take LoRA ranks up to 32 (the
# service's error: "rank 128 exceeds max LoRA rank 32", tinker-cookbook issue 9); dense ones up to 128.
FAMILY_LIMITS: tuple[tuple[str, ModelLimits], ...] = (
    ("Qwen/Qwen3.5-", ModelLimits(vocab_size=248_320, context_length=262_144, max_lora_rank=128)),
    ("Qwen/Qwen3.6-", ModelLimits(vocab_size=248_320, context_length=262_144, max_lora_rank=128)),
    ("Qwen/Qwen3.8-", ModelLimits(vocab_size=248_320, context_length=262_144, max_lora_rank=128)),
    ("Qwen/Qwen3-", ModelLimits(vocab_size=151_936, context_length=40_960, max_lora_rank=128)),
    ("meta-llama/Llama-3", ModelLimits(vocab_size=128_256, context_length=131_072, max_lora_rank=128)),
    ("openai/gpt-oss-", ModelLimits(vocab_size=201_088, context_length=131_072, max_lora_rank=128)),
    ("deepseek-ai/DeepSeek-V3", ModelLimits(vocab_size=129_280, context_length=131_072, max_lora_rank=32)),
    ("moonshotai/Kimi-K2", ModelLimits(vocab_size=163_840, context_length=262_144, max_lora_rank=32)),
    ("nvidia/NVIDIA-Nemotron-3-", ModelLimits(vocab_size=131_072, context_length=None, max_lora_rank=128)),
)
"""Model-name prefix -> the family's :class:`ModelLimits`."""

_MOE = re.compile(r"-A[0-9]+B|gpt-oss-|DeepSeek-V3|Kimi-K2")


def family_limits(model_name: str) -> ModelLimits | None:
    """The limits of ``model_name``'s family (a mixture-of-experts model's LoRA rank capped at 32), or None."""
    for prefix, limits in FAMILY_LIMITS:
        if model_name.startswith(prefix):
            return limits._replace(max_lora_rank=32) if _MOE.search(model_name) else limits
    return None


SUPPORTED_MODELS: tuple[str, ...] = tuple(model.name for model in STATIC_MODELS)
"""Names of :data:`STATIC_MODELS`."""

_JUNE = "2026-06-12"

RETIRED: dict[str, Retirement] = {
    "Qwen/Qwen3.6-27B": Retirement("2026-09-02", "Qwen/Qwen3.8-27B"),
    "moonshotai/Kimi-K2.5": Retirement("2026-07-12", "moonshotai/Kimi-K2.6"),
    "moonshotai/Kimi-K2-Thinking": Retirement(_JUNE, "moonshotai/Kimi-K2.6"),
    "Qwen/Qwen3.5-35B-A3B": Retirement(_JUNE, "Qwen/Qwen3.6-35B-A3B"),
    "Qwen/Qwen3.5-27B": Retirement(_JUNE, "Qwen/Qwen3.6-27B"),
    "Qwen/Qwen3-30B-A3B": Retirement(_JUNE, "Qwen/Qwen3.6-35B-A3B"),
    "Qwen/Qwen3-30B-A3B-Instruct-2507": Retirement(_JUNE, "Qwen/Qwen3.6-35B-A3B (non-thinking mode)"),
    "Qwen/Qwen3-VL-30B-A3B-Instruct": Retirement(_JUNE, "Qwen/Qwen3.6-35B-A3B (includes vision)"),
    "Qwen/Qwen3-32B": Retirement(_JUNE, "Qwen/Qwen3.6-27B"),
    "Qwen/Qwen3-235B-A22B-Instruct-2507": Retirement(_JUNE, "Qwen/Qwen3.5-397B-A17B (non-thinking mode)"),
    "Qwen/Qwen3-VL-235B-A22B-Instruct": Retirement(_JUNE, "Qwen/Qwen3.5-397B-A17B (includes vision)"),
    "Qwen/Qwen3-4B-Instruct-2507": Retirement(_JUNE, "Qwen/Qwen3.5-4B (non-thinking mode)"),
    "meta-llama/Llama-3.3-70B-Instruct": Retirement(
        _JUNE, "nvidia/NVIDIA-Nemotron-3-Super-120B-A12B-BF16, Qwen/Qwen3.6-27B or Qwen/Qwen3.6-35B-A3B (non-thinking mode)"
    ),
    "Qwen/Qwen3-30B-A3B-Base": Retirement(_JUNE, "Qwen/Qwen3.5-35B-A3B-Base"),
    "Qwen/Qwen3-8B-Base": Retirement(_JUNE, "Qwen/Qwen3.5-9B-Base"),
    "meta-llama/Llama-3.1-8B-Instruct": Retirement(_JUNE, "Qwen/Qwen3.5-9B (non-thinking mode)"),
    "meta-llama/Llama-3.1-70B": Retirement(_JUNE, "Qwen/Qwen3.5-35B-A3B-Base"),
    "meta-llama/Llama-3.1-8B": Retirement(_JUNE, "Qwen/Qwen3.5-9B-Base"),
    "meta-llama/Llama-3.2-3B": Retirement(_JUNE, "Qwen/Qwen3.5-9B-Base"),
    "meta-llama/Llama-3.2-1B": Retirement(_JUNE, "Qwen/Qwen3.5-9B-Base"),
    "deepseek-ai/DeepSeek-V3.1-Base": Retirement(_JUNE, "Qwen/Qwen3.5-35B-A3B-Base"),
}
"""Retired models (Tinker's Model Deprecations page) -> retirement date and recommended replacement."""


def retirement_message(name: str) -> str | None:
    """One line saying ``name`` was retired and what replaces it (following retired replacements), or None."""
    retired = RETIRED.get(name)
    if retired is None:
        return None
    hint = retired.replacement
    first = hint.split(" ")[0].rstrip(",")
    seen = {name}
    while first in RETIRED and first not in seen:  # the replacement was itself retired since
        seen.add(first)
        later = RETIRED[first]
        hint += f"; {first} was retired in turn on {later.date}: {later.replacement}"
        first = later.replacement.split(" ")[0].rstrip(",")
    return f"Tinker retired '{name}' on {retired.date}; its recommended replacement: {hint}"


__all__ = [
    "FAMILY_LIMITS",
    "RETIRED",
    "STATIC_MODELS",
    "SUPPORTED_MODELS",
    "ModelLimits",
    "Retirement",
    "TinkerModel",
    "family_limits",
    "retirement_message",
]
