"""The body of a ``run.py`` script such as the walkthroughs' ``examples/*/run.py``: run a config, print the result.

    import sys

    from evsys.cli.script import run_script

    if __name__ == "__main__":
        sys.exit(run_script("examples/sdft_walkthrough/config.yaml"))

``python run.py [CONFIG]`` then prints the walkthrough's three lines (``Status:``, ``Metrics:``, ``Logs:``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from evsys.engine.api import run
from evsys.schema.errors import EvsysError


def run_script(default_config: str, argv: Sequence[str] | None = None) -> int:
    """Run the config named by the first argument of ``argv`` (default ``sys.argv[1:]``), or
    ``default_config`` when there is none, replacing an earlier run of the same name; print its
    Status / Metrics / Logs lines on stdout and return the process's exit status.

    The status is 0 for a completed run, 130 / 143 for one stopped by SIGINT / SIGTERM (as ``evsys run``),
    and 1 for any other outcome; a user mistake prints its one-line message on stderr and returns 1.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    config = args[0] if args else default_config
    try:
        result = run(config, overwrite=True)
    except EvsysError as error:
        print(error, file=sys.stderr)
        return 1
    print(result)
    if result.status == "completed":
        return 0
    return result.exit_code or 1
