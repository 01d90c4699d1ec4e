"""Run the GRPO walkthrough: `python examples/grpo_walkthrough/run.py [CONFIG]`; CONFIG defaults to the page's
config.yaml (the Tinker service; needs TINKER_API_KEY), and config.local.yaml runs it here on the bundled model."""

import sys

from evsys.cli.script import run_script

if __name__ == "__main__":
    sys.exit(run_script("examples/grpo_walkthrough/config.yaml"))
