"""Base models the Tinker service trains, as of the tinker 0.38 SDK and the Tinker docs' model lineup.

The list warns (never fails) in ``evsys validate --deep``: the service adds models over time, and
``RestClient().get_server_capabilities()`` is the live source of truth.
"""

from __future__ import annotations

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
