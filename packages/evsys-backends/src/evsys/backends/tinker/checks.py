"""``evsys validate --deep`` checks of the ``tinker`` backend. Imports no SDK and reaches no network."""

from __future__ import annotations

import importlib.util
from typing import Any

from evsys.backends.tinker.credentials import MISSING_KEY_MESSAGE, credential_source
from evsys.backends.tinker.models import SUPPORTED_MODELS
from evsys.schema.errors import Problem
from evsys.schema.suggest import did_you_mean


def check_model_name(model_name: str, params: Any = None) -> list[Problem]:
    """Check a run on Tinker offline: the model is one Tinker trains, the SDK is installed, a key is set.

    An unknown model name and a missing credential are warnings (the service's list grows; the key
    may be exported later); a missing SDK is an error.
    """
    problems: list[Problem] = []
    if model_name not in SUPPORTED_MODELS:
        hint = did_you_mean(model_name, SUPPORTED_MODELS)
        problems.append(
            Problem(
                f"'{model_name}' is not in the list of models Tinker is known to train{hint}; "
                "the run fails at start if the service does not offer it",
                field="model.name",
                severity="warning",
            )
        )
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
