"""evsys.schema: the contracts every EvSys package shares (no torch here).

- :mod:`evsys.schema.config` — the run config models;
- :mod:`evsys.schema.rows` — example, task, metrics and prediction rows;
- :mod:`evsys.schema.protocols` — Backend, Algorithm, Callback, Verifier protocols;
- :mod:`evsys.schema.hookspecs` / :mod:`evsys.schema.plugins` — the ``evsys_register`` hook and the registry it fills;
- :mod:`evsys.schema.validation` — shallow config validation with file:line:col errors;
- :mod:`evsys.schema.schema_export` — the JSON Schemas in ``schemas/``.
"""

from __future__ import annotations

from evsys.schema.config import RunConfig
from evsys.schema.errors import ConfigError, DataError, EvsysError, Location, PluginError, Problem
from evsys.schema.hookspecs import hookimpl

__all__ = ["ConfigError", "DataError", "EvsysError", "Location", "PluginError", "Problem", "RunConfig", "hookimpl"]
