"""`create_app()`: the FastAPI application over a model registry.

Inference routes are served under both `/v1` (the `fireworks-ai` SDK with a base URL) and
`/inference/v1` (the `openai` SDK; the `anthropic` SDK's base URL is `/inference`); tokenize also
at the root, as vLLM has it. The app does not own the engines: whoever built the registry starts
and stops them (`firebox serve`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from fastapi import APIRouter, FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from firebox.api.body_limit import BodySizeLimit
from firebox.api.errors import install_error_handlers
from firebox.api.hosts import AllowedHosts, allowed_host_names
from firebox.api.routes import chat, completions, health, messages, models, responses, tokenize
from firebox.api.state import AppState, Lifecycle, RateLimiter
from firebox.config import ServerConfig
from firebox.serving.auth import Authenticator, StaticKeyAuthenticator
from firebox.serving.chat import ChatService
from firebox.serving.completions import CompletionService
from firebox.serving.inflight import InflightLimiter
from firebox.serving.messages.service import MessagesService
from firebox.serving.records import CompletionCallback, RequestRecorder, UsageLedger
from firebox.serving.registry import ModelRegistry
from firebox.serving.responses.store import InMemoryResponseStore, ResponseStore
from firebox.serving.responses.service import ResponsesService

INFERENCE_PREFIXES = ("/v1", "/inference/v1")


class _RequestScope:
    """Marks when each request arrived, before its body is read, for the latency figures, and
    adds the headers the request's dependencies left in `request.state.extra_headers`
    (x-ratelimit-*) to whatever answers it, errors and streams included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["arrival_time"] = time.monotonic()

        async def send_with_headers(message: Message) -> None:
            extra = state.get("extra_headers")
            if message["type"] == "http.response.start" and extra:
                present = {name.lower() for name, _ in message.get("headers", [])}
                added = [(k.encode(), v.encode()) for k, v in extra.items() if k.encode() not in present]
                message["headers"] = [*message.get("headers", []), *added]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(
    registry: ModelRegistry,
    authenticator: Authenticator | None = None,
    callbacks: Sequence[CompletionCallback] = (),
    config: ServerConfig | None = None,
    extra_routers: Sequence[APIRouter] = (),
    lifecycle: Lifecycle | None = None,
    rate_limiter: RateLimiter | None = None,
    response_store: ResponseStore | None = None,
    ledger: UsageLedger | None = None,
) -> FastAPI:
    """The app. `authenticator` defaults to the static keys of `config` (none: open access);
    `callbacks` get one `RequestRecord` per finished request, as does `ledger`, which also notes
    each request as it starts (and refuses it with a 503 when it cannot); `extra_routers` (platform, metrics)
    are mounted at the root; `lifecycle.is_draining` turns new inference requests into 503s;
    `response_store` keeps stored responses (default: in memory, for as long as the app runs)."""
    if authenticator is None:
        authenticator = StaticKeyAuthenticator(config.api_keys if config else ())
    recorder = RequestRecorder(callbacks, ledger)
    limits = config or ServerConfig()
    inflight = InflightLimiter(limits.max_inflight_per_key, limits.max_inflight_per_account)
    app = FastAPI(title="firebox", version="0.1.0")
    app.state.firebox = AppState(
        registry=registry,
        authenticator=authenticator,
        chat=ChatService(recorder, inflight),
        completions=CompletionService(recorder, inflight),
        lifecycle=lifecycle or Lifecycle(),
        rate_limiter=rate_limiter,
        responses=ResponsesService(recorder, response_store or InMemoryResponseStore(), inflight),
        messages=MessagesService(recorder, inflight),
        recorder=recorder,
    )
    for prefix in INFERENCE_PREFIXES:
        inference = (chat.router, completions.router, responses.router, messages.router, models.router, tokenize.router)
        for router in inference:
            app.include_router(router, prefix=prefix)
    app.include_router(tokenize.router)
    app.include_router(health.router)
    for router in extra_routers:
        app.include_router(router)
    install_error_handlers(app)
    limits = config or ServerConfig()
    app.add_middleware(BodySizeLimit, max_bytes=limits.max_request_bytes)
    app.add_middleware(AllowedHosts, hosts=allowed_host_names(limits.host, limits.allowed_hosts))
    app.add_middleware(_RequestScope)
    return app
