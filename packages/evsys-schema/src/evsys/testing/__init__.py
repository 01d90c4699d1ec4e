"""evsys.testing: contract checks a plugin author runs against their own plugin module, backend, verifier, algorithm or callback.

    from evsys.testing import check_plugin, check_backend, check_verifier_function, check_algorithm, check_callback

    def test_my_plugin_registers():
        check_plugin(my_pkg.plugin, "my-pkg")

    def test_my_backend_keeps_the_contract():
        check_backend(MyBackend(setup, params))

Each check drives the object through the protocol in :mod:`evsys.schema.protocols` with small
inputs and raises :class:`ContractError` (an ``AssertionError``, so pytest shows it as a failure)
naming the first broken promise. EvSys runs the same checks against its built-ins. This module
ships with ``evsys-schema`` (the package that defines the protocols) and imports no torch.
"""

from __future__ import annotations

from evsys.testing.contracts import (
    ContractError,
    ProtocolOnlyBackend,
    check_algorithm,
    check_backend,
    check_callback,
    check_conforms,
    check_verifier_function,
    protocol_members,
)
from evsys.testing.plugins import check_plugin

__all__ = [
    "ContractError",
    "ProtocolOnlyBackend",
    "check_algorithm",
    "check_backend",
    "check_callback",
    "check_conforms",
    "check_plugin",
    "check_verifier_function",
    "protocol_members",
]
