#!/usr/bin/env bash
# Register the running ai-credits-mcp server as a TAIS tool and attach it to a chat session.
#   bash scripts/register.sh [--keep-alive] [--interval SECONDS] [--env-file PATH]
# Reads .env at the repository root (the environment wins); --env-file PATH is relative to where you are. The work is done by scripts/registration.py.
set -euo pipefail
# A relative --env-file/TAIS_ENV_FILE means the operator's directory, not the repository root we move to.
export REGISTER_CALLER_DIR="$PWD"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v uv >/dev/null 2>&1; then
  echo "register: uv is not installed or not on PATH: install it (pip install uv), then run this again." >&2
  exit 127
fi
exec uv run --quiet python -m scripts.registration "$@"
