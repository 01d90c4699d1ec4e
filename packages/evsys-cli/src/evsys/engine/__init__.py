"""evsys.engine: what runs a config, apart from the command line that asks it to.

The run loop, the run directory, resume, evaluation, export and the Python API. The ``evsys``
command (:mod:`evsys.cli`) parses arguments, calls this package and maps its errors to exit codes.

    from evsys.engine import run
    print(run("examples/sdft_walkthrough/config.local.yaml"))
"""

from __future__ import annotations

from evsys.engine.api import run
from evsys.engine.status import RunOutcome
from evsys.schema.errors import EvsysError

__all__ = ["EvsysError", "RunOutcome", "run"]
