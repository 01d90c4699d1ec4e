"""``evsys validate --deep`` checks of the ``tinker`` backend. Imports no SDK and reaches no network."""

from __future__ import annotations

import importlib.util
from typing import Any

from evsys.backends.tinker.catalog import load_catalog, model_problem
from evsys.backends.tinker.credentials import MISSING_KEY_MESSAGE, credential_source
from evsys.schema.errors import Problem


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
