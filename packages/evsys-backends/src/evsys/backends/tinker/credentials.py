"""Where the Tinker SDK will find credentials, found the same way without importing it or reading the key.

The SDK (``tinker.lib._auth_token_provider``) takes, in order: an ``api_key`` argument, the
``TINKER_API_KEY`` environment variable, the ``TINKER_CREDENTIAL_CMD`` command, then the default key
stored by ``tinker auth login`` in ``~/.tinker/credentials.json``. EvSys never passes an ``api_key``:
it only checks that one of the others exists, and keeps nothing but the *name* of the source.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

MISSING_KEY_MESSAGE = (
    "TINKER_API_KEY is not set: export TINKER_API_KEY=... (get a key at the Tinker console, "
    "or run `tinker auth login`) to use backend 'tinker'"
)


def credentials_path() -> Path:
    """The SDK's credential file (``~/.tinker/credentials.json``)."""
    return Path("~/.tinker/credentials.json").expanduser()


def _stored_default_key_exists(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict):
        return False
    default = data.get("default")
    keys = data.get("keys")
    return isinstance(default, str) and isinstance(keys, dict) and default in keys


def credential_source() -> str | None:
    """Name the source the SDK will take its credential from, or None when there is none.

    Returns ``"TINKER_API_KEY"``, ``"TINKER_CREDENTIAL_CMD"`` or the credential file's path; never the key.
    """
    if os.environ.get("TINKER_API_KEY", "").strip():
        return "TINKER_API_KEY"
    if os.environ.get("TINKER_CREDENTIAL_CMD", "").strip():
        return "TINKER_CREDENTIAL_CMD"
    path = credentials_path()
    if _stored_default_key_exists(path):
        return str(path)
    return None
