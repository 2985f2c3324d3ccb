"""`create_app()`: the FastAPI application over a model registry.

Inference routes are served under both `/v1` (the `fireworks-ai` SDK with a base URL) and
`/inference/v1` (the `openai` SDK); tokenize also at the root, as vLLM has it. The app does not
own the engines: whoever built the registry starts and stops them (`firebox serve`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from fastapi import APIRouter, FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from firebox.api.errors import install_error_handlers
from firebox.api.routes import chat, completions, health, models, tokenize
from firebox.api.state import AppState, Lifecycle
from firebox.config import ServerConfig
from firebox.serving.auth import Authenticator, StaticKeyAuthenticator
from firebox.serving.chat import ChatService
from firebox.serving.completions import CompletionService
from firebox.serving.records import CompletionCallback, RequestRecorder
from firebox.serving.registry import ModelRegistry

INFERENCE_PREFIXES = ("/v1", "/inference/v1")


class _StampArrival:
    """Marks when each request arrived, before its body is read, for the latency figures."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})["arrival_time"] = time.monotonic()
        await self.app(scope, receive, send)


def create_app(
    registry: ModelRegistry,
    authenticator: Authenticator | None = None,
    callbacks: Sequence[CompletionCallback] = (),
    config: ServerConfig | None = None,
    extra_routers: Sequence[APIRouter] = (),
    lifecycle: Lifecycle | None = None,
) -> FastAPI:
    """The app. `authenticator` defaults to the static keys of `config` (none: open access);
    `callbacks` get one `RequestRecord` per finished request; `extra_routers` (platform, metrics)
    are mounted at the root; `lifecycle.is_draining` turns new inference requests into 503s."""
    if authenticator is None:
        authenticator = StaticKeyAuthenticator(config.api_keys if config else ())
    recorder = RequestRecorder(callbacks)
    app = FastAPI(title="firebox", version="0.1.0")
    app.state.firebox = AppState(
        registry=registry,
        authenticator=authenticator,
        chat=ChatService(recorder),
        completions=CompletionService(recorder),
        lifecycle=lifecycle or Lifecycle(),
    )
    for prefix in INFERENCE_PREFIXES:
        for router in (chat.router, completions.router, models.router, tokenize.router):
            app.include_router(router, prefix=prefix)
    app.include_router(tokenize.router)
    app.include_router(health.router)
    for router in extra_routers:
        app.include_router(router)
    install_error_handlers(app)
    app.add_middleware(_StampArrival)
    return app
