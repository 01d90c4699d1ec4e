"""The pluggy hook specification of EvSys (project name ``evsys``, entry-point group ``evsys``).

A plugin is a module with one function ``evsys_register`` marked ``@hookimpl``; it is handed a
:class:`~evsys.schema.registry.Registrar` with one method per kind, each taking a name and a lazy
``"module:attr"`` target::

    from evsys.schema.plugins import hookimpl

    @hookimpl
    def evsys_register(register):
        register.verifier_function("starts_with", "my_pkg.verify:starts_with")
        register.algorithm("my_algo", "my_pkg.algorithm:MyAlgo", params=MyAlgoParams)
"""

from __future__ import annotations

import pluggy

from evsys.schema.registry import Registrar

PROJECT_NAME = "evsys"
HOOK_NAME = "evsys_register"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def evsys_register(register: Registrar) -> None:
    """Register this plugin's algorithms, backends, verifiers, transforms, callbacks, sources and metrics.

    ``register`` records every name under the plugin's distribution; a name another plugin also
    registers stays reachable as ``distribution:name``. Import only light modules here (params
    models): targets load when a run needs them.
    """
