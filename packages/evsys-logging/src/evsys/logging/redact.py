"""Keep secrets out of every file a run writes: redaction by value.

Configs are plain data: EvSys does not interpolate ``${VAR}`` (credentials come from the
environment, e.g. ``TINKER_API_KEY``, and are never a config value). What could still leak is a
secret's *value* — in an error message, a model's answer, a prompt, a free-form note — so every
string written to ``metrics.jsonl``, ``predictions/``, ``summary.md`` and ``resolved_config.json``
has the values of these environment variables replaced by ``***``:

- the well-known credentials in :data:`SECRET_ENV_NAMES` (``TINKER_API_KEY``, ``HF_TOKEN``, ...);
- any variable whose name ends like a credential (``_KEY``, ``_TOKEN``, ``_SECRET``, ``PASSWORD``, ...);
- any variable the config mentions as ``${NAME}`` or ``$NAME`` (a literal string there, but a hint
  that its value is sensitive).

Values shorter than :data:`MIN_SECRET_LENGTH` characters are not treated as secrets (replacing
``"1"`` everywhere would garble every file, and such a value is not a real credential).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "***"
MIN_SECRET_LENGTH = 6
SECRET_ENV_NAMES = (
    "TINKER_API_KEY",
    "TINKER_CREDENTIAL_CMD",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HUGGINGFACE_TOKEN",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "WANDB_API_KEY",
)
_SECRET_NAME = re.compile(r"(?:^|_)(?:API_?KEY|KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?|AUTH)$", re.IGNORECASE)
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
_SECRET_KEY = re.compile(r"(?:api_?key|token|secret|password|passwd|credential)", re.IGNORECASE)


def referenced_env_names(texts: Iterable[str]) -> set[str]:
    """Names written as ``${NAME}`` or ``$NAME`` in ``texts``."""
    names: set[str] = set()
    for text in texts:
        for braced, bare in _REFERENCE.findall(text):
            names.add(braced or bare)
    return names


def strings_in(value: Any) -> Iterable[str]:
    """Every string (keys included) inside a JSON-like value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str):
                yield key
            yield from strings_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from strings_in(item)


def secret_values(environ: Mapping[str, str] | None = None, referenced: Iterable[str] = ()) -> tuple[str, ...]:
    """The values to redact (longest first): see the module docs for which variables count."""
    environ = os.environ if environ is None else environ
    wanted = set(SECRET_ENV_NAMES) | set(referenced)
    values = {
        value.strip()
        for name, value in environ.items()
        if (name in wanted or _SECRET_NAME.search(name)) and len(value.strip()) >= MIN_SECRET_LENGTH
    }
    return tuple(sorted(values, key=len, reverse=True))


def is_secret_key(key: str) -> bool:
    """Whether a config key's name says its value is a credential (``api_key``, ``hf_token``, ...)."""
    return bool(_SECRET_KEY.search(key))


class Redactor:
    """Replaces secret values in strings and, recursively, in JSON-like values."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = tuple(sorted({s for s in secrets if s}, key=len, reverse=True))

    @classmethod
    def from_environment(cls, config: Any = None, environ: Mapping[str, str] | None = None) -> Redactor:
        """Secrets of the environment, plus the variables ``config`` (a model or JSON-like value) references."""
        data = config.model_dump(mode="json") if hasattr(config, "model_dump") else config
        return cls(secret_values(environ, referenced_env_names(strings_in(data))))

    def text(self, text: str) -> str:
        """``text`` with every secret value replaced by ``***``."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def value(self, value: Any) -> Any:
        """A copy of a JSON-like ``value`` with secrets replaced in every string (keys too)."""
        if not self.secrets:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {self.text(k) if isinstance(k, str) else k: self.value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(item) for item in value]
        return value

    def config(self, value: Any) -> Any:
        """Like :meth:`value`, and the value of any key named like a credential becomes ``***``."""
        if isinstance(value, Mapping):
            return {
                k: (REDACTED if isinstance(k, str) and is_secret_key(k) and v not in (None, "") else self.config(v))
                for k, v in value.items()
            }
        if isinstance(value, (list, tuple)):
            return [self.config(item) for item in value]
        return self.value(value)
