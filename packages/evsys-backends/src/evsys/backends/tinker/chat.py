"""Chat rendering helpers shared by backends that hold a Hugging Face tokenizer. Imports no SDK."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evsys.schema.protocols import Message


def token_ids_from_template_output(output: Any) -> list[int]:
    """Token ids from whatever ``apply_chat_template(..., tokenize=True)`` returned.

    transformers 4 returns ``list[int]``; transformers 5 may return a ``BatchEncoding`` (a mapping with
    ``input_ids``), possibly batched (``[[...]]``) or as an array.
    """
    ids: Any = output
    if hasattr(ids, "keys") and "input_ids" in ids:
        ids = ids["input_ids"]
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    ids = list(ids)
    if ids and isinstance(ids[0], (list, tuple)):
        if len(ids) != 1:
            raise ValueError(f"chat template returned a batch of {len(ids)} sequences for one conversation")
        ids = list(ids[0])
    return [int(t) for t in ids]


def render_chat_ids(tokenizer: Any, messages: Sequence[Message], add_generation_prompt: bool = True) -> list[int]:
    """Render ``messages`` with the tokenizer's chat template into token ids."""
    output = tokenizer.apply_chat_template(
        [dict(m) for m in messages], tokenize=True, add_generation_prompt=add_generation_prompt
    )
    return token_ids_from_template_output(output)
