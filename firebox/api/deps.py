"""Per-request plumbing for the routes: state, API key -> principal, request context, model handle.

`Principal` and `Authenticator` live in `serving/auth.py` (no HTTP there) and are re-exported
here for the platform's implementations.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable

from fastapi import Request

from firebox.api.refusals import mark_served
from firebox.api.state import AppState
from firebox.serving.auth import Authenticator, Principal
from firebox.config import DEFAULT_ACCOUNT
from firebox.serving.errors import AuthenticationError, ModelNotFoundError, RateLimitedError, ShuttingDownError
from firebox.serving.records import RequestContext
from firebox.serving.registry import ModelHandle

__all__ = [
    "Authenticator",
    "Principal",
    "app_state",
    "api_key",
    "bearer_token",
    "authenticate",
    "inference_context",
    "resolve_model",
]

CACHE_ISOLATION_HEADER = "x-prompt-cache-isolation-key"
SESSION_AFFINITY_HEADER = "x-session-affinity"


def app_state(request: Request) -> AppState:
    return request.app.state.firebox


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def api_key(request: Request) -> str | None:
    """The bearer token, or Anthropic's `x-api-key` header (what the `anthropic` SDK sends)."""
    return bearer_token(request) or request.headers.get("x-api-key", "").strip() or None


async def authenticate(request: Request) -> Principal:
    """The caller's principal; 401 for a missing or unknown key (when keys are configured)."""
    state = app_state(request)
    token = api_key(request)
    principal = await state.authenticator.authenticate(token)
    if principal is None:
        missing = "Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'"
        message = missing if token is None else "Invalid API key"
        raise AuthenticationError(message)
    request.state.principal = principal
    return principal


def arrival_time(request: Request) -> float:
    """When the request arrived (stamped by the app's first middleware), time.monotonic()."""
    return getattr(request.state, "arrival_time", None) or time.monotonic()


def inference_context(endpoint: str) -> Callable[[Request], Awaitable[RequestContext]]:
    """Dependency: refuse while draining, authenticate, and open the request's context."""

    async def dependency(request: Request) -> RequestContext:
        if app_state(request).lifecycle.is_draining:
            raise ShuttingDownError("the server is shutting down")
        principal = await authenticate(request)
        request_id = uuid.uuid4().hex
        request.state.request_id = request_id
        check_rate_limit(request, principal)
        return RequestContext(
            request_id=request_id,
            principal=principal,
            endpoint=endpoint,
            arrival_time=arrival_time(request),
            created=int(time.time()),
            cache_isolation_key=request.headers.get(CACHE_ISOLATION_HEADER),
            session_affinity=request.headers.get(SESSION_AFFINITY_HEADER),
        )

    return dependency


def check_rate_limit(request: Request, principal: Principal) -> None:
    """429 when the key or its account is over its limits (the message names which); otherwise the
    x-ratelimit-* headers ride on the answer."""
    limiter = app_state(request).rate_limiter
    if limiter is None:
        return
    decision = limiter.check(principal)
    if not decision.allowed:
        raise RateLimitedError(decision.message, dict(decision.headers))
    request.state.extra_headers = dict(decision.headers)


def may_use(principal: Principal | None, account_id: str, is_public: bool | None = None) -> bool:
    """Public models for everyone (`is_public` None: the default account's are public); others
    only for their own account (or admins)."""
    public = account_id == DEFAULT_ACCOUNT if is_public is None else is_public
    if public:
        return True
    return principal is not None and (principal.is_admin or principal.account_id == account_id)


def resolve_model(request: Request, name: str) -> ModelHandle:
    """The handle of `name` (a short name in the caller's account first); another account's
    private model or deployment is reported as not found (404)."""
    principal = getattr(request.state, "principal", None)
    handle = app_state(request).registry.resolve(name, principal.account_id if principal else None)
    if not may_use(principal, handle.account_id, handle.is_public):
        raise ModelNotFoundError(name)
    mark_served(request)
    return handle
