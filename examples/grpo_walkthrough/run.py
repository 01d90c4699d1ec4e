"""Run the GRPO walkthrough: `python examples/grpo_walkthrough/run.py [CONFIG]`.

CONFIG defaults to the page's config.yaml (the Tinker service; needs TINKER_API_KEY).
`python examples/grpo_walkthrough/run.py examples/grpo_walkthrough/config.local.yaml`
runs the same walkthrough on this machine with the bundled model.
"""

from __future__ import annotations

import sys

from evsys.cli import EvsysError, run

DEFAULT_CONFIG = "examples/grpo_walkthrough/config.yaml"


def main() -> int:
    config = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_CONFIG
    try:
        result = run(config, overwrite=True)
    except EvsysError as error:
        print(error, file=sys.stderr)
        return 1
    print(result)
    return 0 if result.status == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
