"""The service client a Tinker run talks to: the SDK's, the offline simulator (dry run), or one given.

:func:`connect` checks for a credential before any SDK client is built (the SDK reads the key itself;
nothing here holds it), wraps the client in a request recorder when ``record_requests`` is set, and
:func:`check_model_offered` checks the model against the service's catalog (:mod:`.catalog`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from evsys.backends.tinker.credentials import MISSING_KEY_MESSAGE, credential_source
from evsys.backends.tinker.params import TinkerBackendParams
from evsys.schema.errors import EvsysError
from evsys.schema.protocols import BackendSetup

logger = logging.getLogger("evsys.backends.tinker")

CAPABILITIES_TIMEOUT_S = 30.0
"""Longest wait for the service's model list at start; past it the cached or static list is used."""


def import_tinker() -> Any:
    """The tinker SDK module; its absence is one line saying which extra to install."""
    try:
        import tinker
    except ImportError as exc:
        raise EvsysError(
            f"backend 'tinker' needs the tinker SDK: pip install 'evsys-backends[tinker]' ({exc})"
        ) from None
    return tinker


def is_sdk_service(service_client: Any) -> bool:
    """Whether ``service_client`` is the SDK's own ``ServiceClient`` (then its RestClient can list models)."""
    try:
        from tinker.lib.public_interfaces.service_client import ServiceClient
    except ImportError:  # another SDK layout: judge by where the class comes from
        return type(service_client).__module__.split(".")[0] == "tinker"
    return isinstance(service_client, ServiceClient)


def connect(setup: BackendSetup, params: TinkerBackendParams, service_client: Any, renderer: Any) -> tuple[Any, Any]:
    """The client to send requests to, and the simulator serving a dry run (None otherwise).

    ``service_client`` None builds one: the simulator with ``setup.dry_run`` (its chat rendered by
    ``renderer``), else ``tinker.ServiceClient`` once a credential exists.
    """
    simulated: Any = None
    if service_client is None and setup.dry_run:
        from evsys.backends.tinker.dry_run import simulated_service

        service_client = simulated = simulated_service(setup, renderer)
    elif service_client is None:
        if credential_source() is None:
            raise EvsysError(MISSING_KEY_MESSAGE)
        tinker = import_tinker()
        service_client = tinker.ServiceClient(
            base_url=params.base_url,
            display_name=params.display_name or f"evsys {setup.model_name}",
        )
    else:
        import_tinker()
    if params.record_requests:
        from pathlib import Path

        from evsys.backends.tinker.recording import RecordingService

        source = "simulator" if setup.dry_run else "service"
        service_client = RecordingService(service_client, Path(params.record_requests), source)
    if setup.model_revision:
        logger.warning(
            "Tinker serves '%s' at the service's revision; model.revision '%s' is ignored",
            setup.model_name,
            setup.model_revision,
        )
    return service_client, simulated


def check_model_offered(
    model_name: str, params: TinkerBackendParams, service_client: Any, fetch: Callable[[], Any] | None
) -> None:
    """Check the model against the service's catalog (cached on disk for a day; see :mod:`.catalog`).

    ``fetch`` None lists the models with the SDK's RestClient when ``service_client`` is the SDK's;
    otherwise (a simulator or test double without ``fetch``) nothing is checked. A model the service
    does not serve is an :class:`EvsysError`; any other problem with it is a warning.
    """
    if fetch is None and is_sdk_service(service_client):
        rest = import_tinker().RestClient(base_url=params.base_url)
        fetch = lambda: rest.get_server_capabilities().result(CAPABILITIES_TIMEOUT_S)  # noqa: E731
    if fetch is None:
        return
    from evsys.backends.tinker.catalog import load_catalog, model_problem

    catalog = load_catalog(fetch, base_url=params.base_url)
    found = model_problem(model_name, catalog)
    if found is None:
        return
    severity, message = found
    if severity == "error":
        raise EvsysError(message)
    logger.warning("%s", message)
