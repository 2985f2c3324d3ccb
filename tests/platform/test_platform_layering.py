"""The platform layer imports neither torch nor FastAPI (the API layer wraps it)."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import sys, pkgutil, importlib, firebox.platform
for module in pkgutil.walk_packages(firebox.platform.__path__, "firebox.platform."):
    if ".migrations" not in module.name:
        importlib.import_module(module.name)
import firebox.cli_keys
print(sorted(m for m in ("torch", "fastapi", "starlette", "firebox.serving") if m in sys.modules))
"""


def test_platform_imports_no_torch_no_http_no_serving() -> None:
    result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
