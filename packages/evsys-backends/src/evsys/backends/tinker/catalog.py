"""The model catalog: the service's list (``get_server_capabilities``) cached on disk, or the static list.

A run with a key fetches the list (``RestClient().get_server_capabilities()``) when the cached copy
is older than :data:`CACHE_TTL_S` and writes it to ``<EvSys cache>/tinker/models-<service>.json``;
``evsys validate --deep`` only reads that file (never the network) and falls back to
:data:`~evsys.backends.tinker.models.STATIC_MODELS`. Imports no SDK.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from evsys.backends.local.resolve import evsys_cache_dir
from evsys.backends.tinker.models import STATIC_MODELS, ModelLimits, TinkerModel, family_limits, retirement_message
from evsys.schema.suggest import did_you_mean

CACHE_TTL_S = 24 * 3600
"""How long a fetched model list is used before a run with a key fetches it again, in seconds."""


@dataclass(frozen=True)
class Catalog:
    """The models Tinker serves, and where the list came from."""

    models: tuple[TinkerModel, ...]
    source: str
    live: bool

    def get(self, name: str) -> TinkerModel | None:
        """The entry for ``name``, or None when the list does not hold it."""
        return next((m for m in self.models if m.name == name), None)

    @property
    def names(self) -> tuple[str, ...]:
        """The model names, in the list's order."""
        return tuple(m.name for m in self.models)


def static_catalog() -> Catalog:
    """The static list (the offline fallback)."""
    return Catalog(STATIC_MODELS, "EvSys's static list of Tinker models (2026-12-01)", live=False)


def cache_path(base_url: str | None = None) -> Path:
    """Where the fetched list of the service at ``base_url`` (default: the SDK's) is cached."""
    service = base_url or os.environ.get("TINKER_BASE_URL") or "default"
    digest = hashlib.sha256(service.encode("utf-8")).hexdigest()[:12]
    return evsys_cache_dir() / "tinker" / f"models-{digest}.json"


def models_from_capabilities(response: Any) -> tuple[TinkerModel, ...]:
    """The catalog entries of a ``GetServerCapabilitiesResponse`` (models without a name are skipped)."""
    out = []
    for item in getattr(response, "supported_models", None) or ():
        name = getattr(item, "model_name", None)
        if not name:
            continue
        trainable = getattr(item, "trainable", None)
        sampleable = getattr(item, "sampleable", None)
        out.append(
            TinkerModel(
                name=str(name),
                max_context_length=getattr(item, "max_context_length", None),
                trainable=True if trainable is None else bool(trainable),
                sampleable=True if sampleable is None else bool(sampleable),
            )
        )
    return tuple(out)


def write_cache(models: Iterable[TinkerModel], base_url: str | None = None, now: float | None = None) -> Path:
    """Write a fetched list to the cache (atomically); returns the file."""
    path = cache_path(base_url)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"fetched_at": time.time() if now is None else now, "models": [asdict(m) for m in models]}
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def read_cache(
    base_url: str | None = None, *, ttl_s: float | None = CACHE_TTL_S, now: float | None = None
) -> Catalog | None:
    """The cached list when it exists, parses and is younger than ``ttl_s`` (None: any age)."""
    path = cache_path(base_url)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        fetched = float(payload["fetched_at"])
        models = tuple(TinkerModel(**row) for row in payload["models"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    age = (time.time() if now is None else now) - fetched
    if ttl_s is not None and age > ttl_s:
        return None
    when = datetime.fromtimestamp(fetched, timezone.utc).isoformat(timespec="seconds")
    return Catalog(models, f"the Tinker service's list (fetched {when}, cached in {path})", live=True)


def load_catalog(
    fetch: Callable[[], Any] | None = None,
    *,
    base_url: str | None = None,
    ttl_s: float = CACHE_TTL_S,
    now: float | None = None,
) -> Catalog:
    """The model catalog: a fresh cached list; else ``fetch()`` (a ``GetServerCapabilitiesResponse``),
    cached; else (no fetch, or it failed) the static list. ``fetch`` failures never raise."""
    cached = read_cache(base_url, ttl_s=ttl_s, now=now)
    if cached is not None:
        return cached
    if fetch is not None:
        try:
            models = models_from_capabilities(fetch())
        except Exception:
            models = ()
        if models:
            write_cache(models, base_url, now)
            cached = read_cache(base_url, ttl_s=None, now=now)
            if cached is not None:
                return cached
    return static_catalog()


def model_limits(name: str, catalog: Catalog | None = None) -> ModelLimits | None:
    """The request limits of ``name`` for the simulated service, or None when ``catalog`` (default: the
    cached service list, else the static one; never the network) does not hold it or its family's
    vocabulary is unknown. The context window is the catalog's (the family's where it has none)."""
    catalog = catalog if catalog is not None else load_catalog()
    entry = catalog.get(name)
    family = family_limits(name)
    if entry is None or family is None:
        return None
    if entry.max_context_length is None:
        return family
    return family._replace(context_length=int(entry.max_context_length))


def model_problem(name: str, catalog: Catalog) -> tuple[str, str] | None:
    """``(severity, one line)`` when ``name`` cannot be trained on Tinker per ``catalog``, else None.

    Retired models and (in the service's own list) missing or untrainable ones are errors; a model
    the static list does not know is a warning, as the service adds models over time.
    """
    retired = retirement_message(name)
    if retired is not None and catalog.get(name) is None:
        return "error", retired
    entry = catalog.get(name)
    if entry is None:
        hint = did_you_mean(name, catalog.names)
        if catalog.live:
            return "error", f"Tinker does not serve '{name}' (per {catalog.source}){hint}"
        return "warning", (
            f"'{name}' is not in the list of models Tinker is known to train{hint}; "
            "the run fails at start if the service does not offer it"
        )
    if not entry.trainable:
        return "error", f"Tinker serves '{name}' for sampling only, not training (per {catalog.source})"
    return None


__all__ = [
    "CACHE_TTL_S",
    "Catalog",
    "cache_path",
    "load_catalog",
    "model_limits",
    "model_problem",
    "models_from_capabilities",
    "read_cache",
    "static_catalog",
    "write_cache",
]
