"""``evsys validate --deep`` checks of the ``tinker`` backend. Imports no SDK and reaches no network."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from typing import Any

from evsys.backends.tinker.catalog import load_catalog, model_problem
from evsys.backends.tinker.credentials import MISSING_KEY_MESSAGE, credential_source
from evsys.schema.errors import Problem
from evsys.schema.protocols import Message


def check_model_name(model_name: str, params: Any = None) -> list[Problem]:
    """Check a run on Tinker offline: the model is one Tinker trains, the SDK is installed, a key is set.

    The model is looked up in the service's list cached by an earlier run (never fetched here), else
    in the static list: a retired model is an error naming its replacement, an unknown one a warning
    (the service's list grows); a missing SDK is an error, a missing credential a warning.
    """
    problems: list[Problem] = []
    base_url = getattr(params, "base_url", None)
    found = model_problem(model_name, load_catalog(base_url=base_url))
    if found is not None:
        severity, message = found
        problems.append(Problem(message, field="model.name", severity=severity))
    if importlib.util.find_spec("tinker") is None:
        problems.append(
            Problem(
                "the tinker SDK is not installed: pip install 'evsys-backends[tinker]'",
                field="backend.kind",
            )
        )
    if credential_source() is None:
        problems.append(Problem(MISSING_KEY_MESSAGE, field="backend.kind", severity="warning"))
    return problems


def check_prompt_lengths(
    model_name: str,
    params: Any,
    prompts: Mapping[str, Sequence[Sequence[Message]]],
    trained: Sequence[Sequence[Message]],
    max_new_tokens: int,
) -> tuple[list[Problem], str | None]:
    """Tokenize the run's chats offline with its renderer and check them against the context window.

    ``prompts`` maps a kind (``student``, ``teacher``) to the generation prompts of every example,
    ``trained`` holds the chats trained on whole (SFT). The longest prompt of each kind plus
    ``max_new_tokens``, and the longest trained chat, must fit the model's context window (the
    service's cached figure, else the static list's). Returns the problems and a summary for the
    ``validate`` line (None when nothing was measured).
    """
    from evsys.backends.tinker.measure import measure_chats
    from evsys.backends.tinker.renderers import choose_renderer

    choice = choose_renderer(model_name, getattr(params, "renderer", None))
    if choice.uses_hf_template:
        message = (
            f"prompt lengths not checked offline: '{model_name}' renders with its Hugging Face chat template "
            "(tml-renderers does not cover it), which the run fetches from the Hugging Face hub"
        )
        return [Problem(message, field="model.name", severity="warning")], None
    try:
        longest = measure_chats(choice.name, prompts, trained)
    except RuntimeError as exc:
        return [Problem(f"prompt lengths not checked: {exc}", field="backend.kind", severity="warning")], None
    catalog = load_catalog(base_url=getattr(params, "base_url", None))
    entry = catalog.get(model_name)
    window = entry.max_context_length if entry is not None else None
    problems: list[Problem] = []
    parts = []
    for kind, found in longest.items():
        if kind == "sft":
            parts.append(f"examples up to {found.tokens} tokens")
            if window is not None and found.tokens > window:
                problems.append(
                    Problem(
                        f"example {found.index + 1} renders to {found.tokens} tokens, past the context window "
                        f"of '{model_name}' ({window} tokens, per {catalog.source})",
                        field="data.path",
                    )
                )
            continue
        parts.append(f"{kind} prompts up to {found.tokens}")
        total = found.tokens + max_new_tokens
        if window is not None and total > window:
            problems.append(
                Problem(
                    f"the longest {kind} prompt (example {found.index + 1}) is {found.tokens} tokens; with "
                    f"max_new_tokens {max_new_tokens} a sequence needs {total}, past the context window of "
                    f"'{model_name}' ({window} tokens, per {catalog.source})",
                    field="algorithm.params.max_new_tokens",
                )
            )
    if not parts:
        return problems, None
    fact = ", ".join(parts) + (" tokens" if not parts[-1].endswith("tokens") else "")
    if max_new_tokens and any(kind != "sft" for kind in longest):
        fact += f" + {max_new_tokens} new"
    fact += f" of {window}" if window is not None else " (context window unknown offline)"
    return problems, f"{fact} ({choice.name})"
