"""The models Tinker serves: the service's own list when a key has fetched it (cached), else a static list.

The live source is ``RestClient().get_server_capabilities()`` (tinker 0.38: ``model_name``,
``max_context_length``, ``trainable``, ``sampleable`` per model); :mod:`.catalog` fetches and caches it.
The static list below is the offline fallback: Tinker's lineup as of 2026-12-01, after the
retirements on its Model Deprecations page (2026-06-12, 2026-07-12, 2026-09-02). Its context windows
are the models' native windows (an upper bound; the service's ``max_context_length`` replaces them),
``None`` where none is published. Imports no SDK.
"""

from __future__ import annotations

from dataclasses import dataclass


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


__all__ = ["RETIRED", "STATIC_MODELS", "SUPPORTED_MODELS", "Retirement", "TinkerModel", "retirement_message"]
