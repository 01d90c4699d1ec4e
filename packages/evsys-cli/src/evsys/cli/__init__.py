"""evsys.cli: the ``evsys`` command and the Python API.

    from evsys.cli import run
    print(run("examples/sdft_walkthrough/config.local.yaml"))
"""

from __future__ import annotations

from evsys.engine.api import run
from evsys.engine.status import RunOutcome
from evsys.schema.errors import EvsysError

__all__ = ["EvsysError", "RunOutcome", "run"]
