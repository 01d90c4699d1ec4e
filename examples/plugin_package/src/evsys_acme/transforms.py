"""The data transform ``acme_qa_pairs``: raw ``{"q": ..., "a": ...}`` rows into PromptExample rows."""

from __future__ import annotations

from typing import Any


def qa_pairs(row: dict[str, Any]) -> dict[str, Any] | None:
    """``{"q": question, "a": answer}`` -> ``{"inputs": {"question": question}, "expected": answer}``.

    Rows without a question are dropped (None).
    """
    question = str(row.get("q", "")).strip()
    if not question:
        return None
    return {"inputs": {"question": question}, "expected": str(row.get("a", ""))}
