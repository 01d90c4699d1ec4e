"""evsys.data: data sources, example-format detection, transforms and prompt templates.

Public API::

    from evsys.data import register_transform, load_examples, render_template, template_fields

``SourceOptions`` says where rows come from (``source_kind``, ``split``, ``subset``, ``columns``,
``transform``); ``evsys.data.hf`` is the Hugging Face ``datasets`` source (extra ``[hf]``).
"""

from __future__ import annotations

from evsys.data.examples import SourceOptions, check_examples_file, load_examples
from evsys.data.jsonl import JsonlLine, read_jsonl
from evsys.data.templates import render_template, template_fields
from evsys.data.transforms import register_transform

__all__ = [
    "JsonlLine",
    "SourceOptions",
    "check_examples_file",
    "load_examples",
    "read_jsonl",
    "register_transform",
    "render_template",
    "template_fields",
]
