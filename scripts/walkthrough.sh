#!/usr/bin/env bash
# Set up (first time only) and run the SDFT walkthrough end to end on this machine's CPU
# with the bundled SmolLM2-135M-Instruct: validate offline, then train 2 steps with in-loop eval.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
evsys validate examples/sdft_walkthrough/config.local.yaml --deep
python examples/sdft_walkthrough/run.py examples/sdft_walkthrough/config.local.yaml
