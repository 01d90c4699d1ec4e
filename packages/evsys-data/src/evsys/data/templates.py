"""``str.format`` prompt templates such as ``user_template: "{question}"``."""

from __future__ import annotations

import string
from collections.abc import Mapping
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=256)
def template_fields(template: str) -> frozenset[str]:
    """The top-level placeholder names of ``template`` (``"{a.b} {c[0]}"`` -> ``{"a", "c"}``).

    Raises ``ValueError`` for a malformed template (an unmatched brace, say).
    """
    names = set()
    for _, field_name, _, _ in string.Formatter().parse(template):
        if field_name is None:
            continue
        if field_name == "" or field_name.isdigit():
            raise ValueError("positional placeholders ('{}' or '{0}') are not allowed; name them, e.g. '{question}'")
        head = field_name.split(".", 1)[0].split("[", 1)[0]
        names.add(head)
    return frozenset(names)


def render_template(template: str, values: Mapping[str, Any]) -> str:
    """Fill ``template`` from ``values``; a missing placeholder raises ``KeyError`` naming it."""
    missing = template_fields(template) - set(values)
    if missing:
        raise KeyError(f"template placeholder(s) {', '.join(sorted('{' + m + '}' for m in missing))} not in the row's fields")
    return template.format_map(dict(values))
