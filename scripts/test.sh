#!/usr/bin/env bash
# Runs the whole test suite (what CI runs), after `scripts/bootstrap.sh --test`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FIREBOX_VENV:-.venv}
# The platform tests run against a real PostgreSQL and drive a real Chromium (Debian packages,
# installed and started here; both steps are idempotent). Where they cannot be installed (no root,
# no apt), those tests are skipped and say why.
if [ -z "${FIREBOX_TEST_POSTGRES_URL:-}" ]; then
  eval "$(scripts/ci_postgres.sh)" || echo "test: PostgreSQL is unavailable; its tests will be skipped" >&2
fi
scripts/ci_browser.sh >/dev/null || echo "test: Chromium is unavailable; the dashboard browser test will be skipped" >&2
"$VENV/bin/lint-imports"
exec "$VENV/bin/python" -m pytest -q "$@"
