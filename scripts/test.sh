#!/usr/bin/env bash
# Runs the whole test suite (what CI runs), after `scripts/bootstrap.sh --test`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FIREBOX_VENV:-.venv}
"$VENV/bin/lint-imports"
exec "$VENV/bin/python" -m pytest -q "$@"
