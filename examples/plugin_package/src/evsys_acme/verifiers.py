"""The verifier function ``acme_starts_with``."""

from __future__ import annotations

from typing import Any


def starts_with(output: str, expected: Any, *, ignore_case: bool = True) -> float:
    """1.0 when the answer (leading whitespace and quotes stripped) starts with an expected string, else 0.0.

    ``expected`` is a string or a list of acceptable strings; an empty expected string never matches.
    """
    text = str(output).lstrip().lstrip("\"'*").lstrip()
    candidates = expected if isinstance(expected, (list, tuple)) else [expected]
    for candidate in candidates:
        want = str(candidate).strip()
        if not want:
            continue
        if (text.casefold().startswith(want.casefold()) if ignore_case else text.startswith(want)):
            return 1.0
    return 0.0
