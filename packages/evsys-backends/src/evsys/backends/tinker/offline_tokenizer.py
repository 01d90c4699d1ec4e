"""A model's tokenizer and chat rendering without the network, for the simulated service (``--dry-run``).

``offline_tokenizer(model_name)`` is the one entry point: it answers with an object shaped like the
Hugging Face tokenizer ``TrainingClient.get_tokenizer()`` returns (``encode``, ``decode``,
``eos_token_id``, ``apply_chat_template``), built on Thinking Machines' ``tml-renderers`` and its
built-in tokenizers, or ``None`` when no offline tokenizer covers the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

# Model name prefix -> how to build its tml-renderers renderer (thinking off, as the cookbook's SDFT recipe).
_RENDERERS: tuple[tuple[str, Callable[[Any], Any]], ...] = (
    ("Qwen/Qwen3.5-", lambda r: r.Qwen35.disable_thinking()),
    ("Qwen/Qwen3-", lambda r: r.Qwen3.disable_thinking() if hasattr(r.Qwen3, "disable_thinking") else r.Qwen3()),
)


class RendererTokenizer:
    """A Hugging Face-shaped tokenizer over a ``tml-renderers`` renderer: its tokenizer and its chat format."""

    def __init__(self, renderer: Any) -> None:
        from tml_renderers import chat
        from tml_renderers.tinker import token_spans_to_tinker_model_input

        self._renderer = renderer
        self._tok = renderer.tokenizer
        self._chat = chat
        self._to_input = token_spans_to_tinker_model_input
        stop = list(renderer.stop())
        self.eos_token_id: int | None = int(stop[0]) if stop else None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text`` (ordinary text: special-token strings are not parsed)."""
        return [int(t) for t in self._tok.encode_ordinary(text)]

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text of ``token_ids``; special tokens are dropped when ``skip_special_tokens``."""
        ids = [int(t) for t in token_ids]
        if skip_special_tokens:
            ids = [t for t in ids if not self._tok.is_special_token(t)]
        return str(self._tok.decode(ids))

    def _ids(self, spans: Any) -> list[int]:
        return [int(t) for t in self._to_input(spans).to_ints()]

    def apply_chat_template(
        self, messages: Sequence[dict[str, str]], tokenize: bool = True, add_generation_prompt: bool = True, **_: Any
    ) -> list[int]:
        """The renderer's tokens of ``messages``: for completion (ending with the assistant header) or in full."""
        chat = self._chat.MessageList.from_oss_messages([dict(m) for m in messages])
        if add_generation_prompt:
            spans, _parser = self._renderer.render_for_completion(chat)
            return self._ids(spans)
        examples = self._renderer.render_for_sft(chat)
        return self._ids(examples[0].input_token_spans) if examples else []


def offline_tokenizer(model_name: str) -> Any | None:
    """The tokenizer of ``model_name`` without the network, or ``None`` when no offline one covers it."""
    for prefix, build in _RENDERERS:
        if model_name.startswith(prefix):
            try:
                from tml_renderers import renderers
            except ImportError:
                return None
            return RendererTokenizer(build(renderers))
    return None
