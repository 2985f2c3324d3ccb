"""Shared by the platform routers: bearer auth, errors as OpenAI-shaped bodies, paging."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from firebox.api.deps import bearer_token
from firebox.api.errors import validation_body
from firebox.platform.auth import Authenticator, Principal
from firebox.platform.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    PlatformError,
    ResourceExhaustedError,
    UnauthenticatedError,
)
from firebox.protocol.common import ErrorDetail, ErrorResponse

_STATUS = {InvalidArgumentError: (400, "invalid_request_error"),
           UnauthenticatedError: (401, "authentication_error"),
           PermissionDeniedError: (403, "permission_error"),
           NotFoundError: (404, "not_found_error"),
           AlreadyExistsError: (409, "conflict_error"),
           ResourceExhaustedError: (429, "rate_limit_error")}
MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50
T = TypeVar("T")


def platform_error_response(error: PlatformError) -> JSONResponse:
    status, error_type = next((v for k, v in _STATUS.items() if isinstance(error, k)), (500, "api_error"))
    body = ErrorResponse(error=ErrorDetail(message=str(error), type=error_type, code=error.code))
    return JSONResponse(body.model_dump(), status_code=status)


def _validation_response(error: RequestValidationError) -> JSONResponse:
    return JSONResponse(validation_body(error).model_dump(), status_code=400)


class PlatformRoute(APIRoute):
    """Turns platform errors and validation errors into OpenAI-shaped JSON error bodies, so the
    routers do not depend on the app's exception handlers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except PlatformError as error:
                return platform_error_response(error)
            except RequestValidationError as error:
                return _validation_response(error)

        return handle


OPEN_SERVER_REFUSAL = (
    "this server runs open (no API key configured), so it takes no control-plane requests: "
    "create a key with `firebox keys create` or start it with --api-key"
)


def principal_dependency(
    authenticator: Authenticator, *, refuse_open: bool = False
) -> Callable[[Request], Coroutine[Any, Any, Principal]]:
    """A FastAPI dependency: the request's principal, or a 401. With `refuse_open` (accounts, keys,
    deployments), an open server answers 403: anyone who can reach it would be its admin."""

    async def current_principal(request: Request) -> Principal:
        principal = await authenticator.authenticate(bearer_token(request))
        if principal is None:
            raise UnauthenticatedError("invalid or missing API key")
        if refuse_open and principal.is_admin and await _is_open(authenticator):
            raise PermissionDeniedError(OPEN_SERVER_REFUSAL)
        return principal

    return current_principal


async def _is_open(authenticator: Authenticator) -> bool:
    is_open = getattr(authenticator, "is_open", None)  # blocking on the platform's database
    return is_open is not None and await asyncio.to_thread(is_open)


def paginate(items: Sequence[T], page_size: int | None, page_token: str | None) -> tuple[list[T], str]:
    """A page of `items` and the token of the next one ("" on the last page); tokens are offsets."""
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    if size < 1:
        raise InvalidArgumentError("pageSize must be positive")
    try:
        offset = int(page_token or 0)
    except ValueError:
        offset = -1
    if offset < 0:
        raise InvalidArgumentError(f"invalid pageToken {page_token!r}")
    end = offset + size
    return list(items[offset:end]), str(end) if end < len(items) else ""
