#!/usr/bin/env bash
# Installs Debian's chromium for the dashboard's browser test (driven by Python Playwright with
# executable_path=/usr/bin/chromium; Playwright's own browser download is never used).
# Idempotent; prints the browser path on stdout.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v chromium >/dev/null 2>&1; then
  echo "ci_browser: installing chromium" >&2
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >&2 \
    || { $SUDO apt-get update -q >&2 && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >&2; }
fi
command -v chromium
