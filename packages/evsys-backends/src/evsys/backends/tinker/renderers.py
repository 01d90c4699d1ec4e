"""Chats rendered by Thinking Machines' own renderers (``tml-renderers``), as tinker-cookbook renders them.

Which renderer a model gets is decided here from the model name, with the cookbook's renderer names
(``qwen3_5_disable_thinking``, ``qwen3``, ...); ``backend.params.renderer`` picks one by name.
Hybrid-thinking models get their ``*_disable_thinking`` renderer unless a renderer that thinks is
named (the cookbook's SDFT recipe renders Qwen3.5-4B with ``qwen3_5_disable_thinking``). A model
the renderers do not cover keeps its Hugging Face chat template (:data:`HF_TEMPLATE`).

The tables and :func:`choose_renderer` import nothing heavy (``evsys validate`` reads them);
:class:`RendererChat` imports ``tml_renderers``, whose native code needs torch loaded.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evsys.schema.errors import EvsysError
from evsys.schema.protocols import Message

HF_TEMPLATE = "huggingface"
"""``backend.params.renderer`` value that keeps the model's Hugging Face chat template."""

#: The cookbook's renderer names that ``tml-renderers`` provides: name -> (class, constructor or None).
TML_RENDERERS: dict[str, tuple[str, str | None]] = {
    "qwen3": ("Qwen3", None),
    "qwen3_disable_thinking": ("Qwen3", "disable_thinking"),
    "qwen3_instruct": ("Qwen3", "instruct"),
    "qwen3_vl": ("Qwen3", "vision"),
    "qwen3_vl_instruct": ("Qwen3", "vision_instruct"),
    "qwen3_5": ("Qwen35", None),
    "qwen3_5_disable_thinking": ("Qwen35", "disable_thinking"),
    "qwen3_8_xhigh_reasoning": ("Qwen38", None),
    "qwen3_8_medium_reasoning": ("Qwen38", "medium"),
    "qwen3_8_low_reasoning": ("Qwen38", "low"),
    "qwen3_8_disable_thinking": ("Qwen38", "disable_thinking"),
    "nemotron3": ("Nemotron3", None),
    "nemotron3_disable_thinking": ("Nemotron3", "disable_thinking"),
    "nemotron3_low_thinking": ("Nemotron3", "low"),
    "nemotron3_preserve_thinking": ("Nemotron3", "preserve_thinking_history"),
    "nemotron3_ultra": ("Nemotron3", "ultra"),
    "nemotron3_ultra_disable_thinking": ("Nemotron3", "ultra_disable_thinking"),
    "nemotron3_ultra_medium_thinking": ("Nemotron3", "ultra_medium"),
    "nemotron3_ultra_preserve_thinking": ("Nemotron3", "ultra_preserve_thinking_history"),
}

#: Renderers whose prompts leave no room for a thinking block.
NON_THINKING: frozenset[str] = frozenset(
    name for name in TML_RENDERERS if "disable_thinking" in name or name.endswith("instruct")
)

#: (pattern on the model name, default renderer) — thinking off for hybrid-thinking models.
_MODEL_RENDERERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^Qwen/Qwen3\.[56]-[^/]*$"), "qwen3_5_disable_thinking"),
    (re.compile(r"^Qwen/Qwen3\.8-[^/]*$"), "qwen3_8_disable_thinking"),
    (re.compile(r"^Qwen/Qwen3-VL-[^/]*-Instruct$"), "qwen3_vl_instruct"),
    (re.compile(r"^Qwen/Qwen3-[^/]*-Instruct-2507$"), "qwen3_instruct"),
    (re.compile(r"^Qwen/Qwen3-[0-9.]+B$|^Qwen/Qwen3-[0-9]+B-A[0-9]+B$"), "qwen3_disable_thinking"),
    (re.compile(r"^nvidia/NVIDIA-Nemotron-3-Ultra-[^/]*$"), "nemotron3_ultra_disable_thinking"),
    (re.compile(r"^nvidia/NVIDIA-Nemotron-3-(Nano|Super)-[^/]*$"), "nemotron3_disable_thinking"),
)


@dataclass(frozen=True)
class RendererChoice:
    """The renderer a run uses: a ``tml-renderers`` name, or :data:`HF_TEMPLATE`."""

    name: str
    thinking: bool

    @property
    def uses_hf_template(self) -> bool:
        """Whether chats go through the model's Hugging Face chat template."""
        return self.name == HF_TEMPLATE


def default_renderer(model_name: str) -> str:
    """The renderer a model gets when none is named: its cookbook renderer with thinking off, or the HF template."""
    base = model_name.split(":")[0]
    if base.endswith("-Base"):
        return HF_TEMPLATE
    for pattern, name in _MODEL_RENDERERS:
        if pattern.match(base):
            return name
    return HF_TEMPLATE


def choose_renderer(model_name: str, requested: str | None = None) -> RendererChoice:
    """The renderer for ``model_name``: ``requested`` (``backend.params.renderer``) or the model's default.

    Raises :class:`ValueError` for a name that is neither a ``tml-renderers`` name nor :data:`HF_TEMPLATE`.
    """
    name = requested or default_renderer(model_name)
    if name != HF_TEMPLATE and name not in TML_RENDERERS:
        raise ValueError(unknown_renderer_message(name))
    return RendererChoice(name=name, thinking=name != HF_TEMPLATE and name not in NON_THINKING)


def unknown_renderer_message(name: str) -> str:
    """One line naming the renderers there are, for an unknown ``backend.params.renderer``."""
    return (
        f"unknown renderer '{name}': tml-renderers provides {', '.join(sorted(TML_RENDERERS))}; "
        f"'{HF_TEMPLATE}' keeps the model's Hugging Face chat template"
    )


def opens_thinking(prompt_text: str) -> bool:
    """Whether a rendered prompt ends inside an open ``<think>`` block (the completion continues the thinking)."""
    return prompt_text.rfind("<think>") > prompt_text.rfind("</think>")


# -- rendering (imports tml_renderers) --------------------------------------------------------------

THINK_MARKERS: frozenset[str] = frozenset({"<think>", "</think>"})


def _import_tml() -> Any:
    try:
        import tml_renderers
    except ImportError as exc:
        raise EvsysError(
            f"backend 'tinker' renders chats with tml-renderers: pip install 'evsys-backends[tinker]' ({exc})"
        ) from None
    return tml_renderers


def _span_tokens(spans: Sequence[Any]) -> list[int]:
    tokens: list[int] = []
    for span in spans:
        inner = getattr(span, "span", span)
        if not hasattr(inner, "tokens"):
            raise EvsysError(f"tml-renderers rendered a {type(inner).__name__}; EvSys chats are text only")
        tokens.extend(int(t) for t in inner.tokens)
    return tokens


class RendererTokenizer:
    """The :class:`~evsys.schema.protocols.Tokenizer` of a ``tml-renderers`` renderer (built in, offline).

    ``eos_token_id`` is the renderer's first stop token. ``decode(..., skip_special_tokens=True)``
    drops control tokens but keeps ``<think>`` / ``</think>`` (as Hugging Face's Qwen tokenizers do),
    so the thinking block stays visible to whoever separates it from the answer.
    """

    def __init__(self, tokenizer: Any, stop_tokens: Sequence[int], name: str) -> None:
        self._tokenizer = tokenizer
        self.eos_token_id: int | None = int(stop_tokens[0]) if stop_tokens else None
        self.name_or_path = f"tml-renderers:{name}"

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of plain ``text`` (special-token text is encoded as ordinary text)."""
        return [int(t) for t in self._tokenizer.encode_ordinary(text)]

    @functools.cached_property
    def token_count(self) -> int:
        """How many ids the tokenizer decodes (ids ``0 .. token_count - 1``); the model's vocabulary
        (its embedding rows, which the service checks ids against) may be larger."""
        low, high = 0, 1 << 24
        while low < high:
            mid = (low + high) // 2
            try:
                self._tokenizer.decode([mid])
            except ValueError:
                high = mid
            else:
                low = mid + 1
        return low

    def _dropped(self, token: int) -> bool:
        return bool(self._tokenizer.is_special_token(token)) and self._tokenizer.decode([token]) not in THINK_MARKERS

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text of ``token_ids``; ``skip_special_tokens`` drops control tokens (not thinking markers)."""
        ids = [int(t) for t in token_ids]
        if skip_special_tokens:
            ids = [t for t in ids if not self._dropped(t)]
        return str(self._tokenizer.decode(ids))


class RendererChat:
    """Renders chats with one ``tml-renderers`` renderer, named as in tinker-cookbook."""

    def __init__(self, name: str) -> None:
        if name not in TML_RENDERERS:
            raise ValueError(unknown_renderer_message(name))
        tml = _import_tml()
        class_name, constructor = TML_RENDERERS[name]
        cls = getattr(tml.renderers, class_name)
        self.name = name
        self.thinking = name not in NON_THINKING
        self._chat = tml.chat
        self._renderer = getattr(cls, constructor)() if constructor else cls()
        self.stop_tokens: list[int] = _stop_tokens(self._renderer.stop(), self._renderer.tokenizer)
        self.tokenizer = RendererTokenizer(self._renderer.tokenizer, self.stop_tokens, name)

    def __repr__(self) -> str:
        return f"RendererChat({self.name!r})"

    def _messages(self, messages: Sequence[Message]) -> Any:
        return self._chat.MessageList.from_oss_messages([{"role": m["role"], "content": m["content"]} for m in messages])

    def render_prompt(self, messages: Sequence[Message]) -> list[int]:
        """Token ids of ``messages`` followed by the assistant's generation prompt (``render_for_completion``)."""
        spans, _parser = self._renderer.render_for_completion(self._messages(messages))
        return _span_tokens(spans)

    def render_sft(self, messages: Sequence[Message]) -> list[tuple[list[int], list[float]]]:
        """``render_for_sft``: one ``(tokens, weights)`` per training example, weights unshifted (one per token).

        A conversation gives several examples when an earlier assistant turn renders differently in
        the history (e.g. its thinking stripped) than where it is trained.
        """
        out = []
        for example in self._renderer.render_for_sft(self._messages(messages)):
            tokens = _span_tokens(example.input_token_spans)
            weights = [float(w) for w in example.per_token_loss_weight_unshifted]
            if len(weights) != len(tokens):
                raise EvsysError(f"tml-renderers gave {len(weights)} weights for {len(tokens)} tokens")
            out.append((tokens, weights))
        return out

    def render_chat(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> list[int]:
        """The protocol's ``render_chat``: the prompt, or (without the generation prompt) the whole chat as trained."""
        if add_generation_prompt:
            return self.render_prompt(messages)
        examples = self.render_sft(messages)
        if not examples:
            raise EvsysError(f"renderer '{self.name}' rendered no training example for this chat")
        return examples[-1][0]


def _stop_tokens(stop: Any, tokenizer: Any) -> list[int]:
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    out = []
    for item in stop:
        out.append(int(item) if isinstance(item, int) else int(tokenizer.encode_special(item)))
    return out


__all__ = [
    "HF_TEMPLATE",
    "NON_THINKING",
    "TML_RENDERERS",
    "RendererChat",
    "RendererChoice",
    "RendererTokenizer",
    "choose_renderer",
    "default_renderer",
    "opens_thinking",
    "unknown_renderer_message",
]
