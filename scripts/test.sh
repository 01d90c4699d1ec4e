#!/usr/bin/env bash
# Set up (first time only) and run the whole test suite, end-to-end runs on the bundled model included.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k verifiers`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
# one converted copy of the bundled model for every test that needs it
export EVSYS_CACHE_DIR="${EVSYS_CACHE_DIR:-$PWD/.evsys-cache}"
ruff check .
python -m pytest -q "$@"
