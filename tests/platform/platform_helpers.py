"""Helpers shared by the platform tests: the routers on a small app, and a live server."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn
from fastapi import FastAPI

from firebox.api.routes.control_plane import control_plane_router
from firebox.api.routes.dashboard import dashboard_router
from firebox.api.routes.metrics import metrics_router
from firebox.api.routes.usage import usage_router
from firebox.platform.services import Platform
from firebox.request_record import RequestRecord

ADMIN_KEY = "admin-secret"


def request_record(request_id: str, **fields: Any) -> RequestRecord:
    """A finished request as serving reports it: nothing counted, unless `fields` say otherwise."""
    defaults: dict[str, Any] = {
        "account_id": "fireworks", "key_id": None, "model": "", "deployment": None, "endpoint": "",
        "prompt_tokens": 0, "cached_tokens": 0, "completion_tokens": 0, "ttft_s": None, "latency_s": 0.0,
        "status_code": 200, "aborted": False, "user": None, "metadata": None, "created": int(time.time()),
    }  # fmt: skip
    return RequestRecord(request_id=request_id, **{**defaults, **fields})


def platform_app(services: Platform) -> FastAPI:
    """The platform routers mounted the way the lead mounts them in `create_app()`."""
    app = FastAPI()
    app.include_router(control_plane_router(services.accounts, services.keys, services.authenticator))
    app.include_router(usage_router(services.usage_query, services.accounts, services.authenticator))
    app.include_router(metrics_router(services.metrics))
    app.include_router(dashboard_router())
    return app


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """A real uvicorn server in a thread, for clients that need a socket (SDKs, the browser)."""

    def __init__(self, app: FastAPI) -> None:
        self.port = _free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
