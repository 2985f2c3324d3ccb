"""Exceptions -> OpenAI-shaped error bodies `{"error": {"message", "type", "param", "code"}}`
(on the Anthropic Messages routes, Anthropic's `{"type": "error", "error": {"type", "message"}}`).

Validation errors are 400 (not FastAPI's 422) and name the field; unknown routes 404, wrong
methods 405; serving and engine errors take their status from `serving.errors.status_of`;
anything else is a 500 with a generic message (the traceback goes to the log).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from firebox.api.headers import REQUEST_ID
from firebox.api.refusals import record_refusal
from firebox.api.sse import ClientDisconnected
from firebox.engine.types import EngineError, EngineUnavailableError, QueueFullError
from firebox.protocol.common import ErrorDetail, ErrorResponse
from firebox.protocol.messages import MessagesErrorResponse
from firebox.serving.errors import RateLimitedError, ServingError, error_response, status_of
from firebox.serving.generation.run import CLIENT_CLOSED

logger = logging.getLogger(__name__)

RETRY_AFTER_S = "1"
_FIELD = re.compile(r"[a-z_][a-z0-9_]*")
_MESSAGES_PATH = re.compile(r"(/inference)?/v1/messages(/count_tokens)?/?")  # errors in Anthropic's shape there
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}
_HTTP_ERRORS = {
    401: ("authentication_error", "UNAUTHENTICATED"),
    404: ("not_found_error", "NOT_FOUND"),
    405: ("invalid_request_error", "METHOD_NOT_ALLOWED"),
    413: ("invalid_request_error", "PAYLOAD_TOO_LARGE"),
}


def json_error(status: int, body: ErrorResponse, request: Request, headers: dict[str, str] | None = None) -> Response:
    headers = dict(headers or {})
    request_id = getattr(request.state, "request_id", None)
    if request_id is not None:
        headers[REQUEST_ID] = request_id
    shaped = MessagesErrorResponse.of(body.error) if _MESSAGES_PATH.fullmatch(request.url.path) else body
    return Response(shaped.model_dump_json(), status_code=status, media_type="application/json", headers=headers)


def field_path(loc: tuple[Any, ...]) -> str | None:
    """`("body", "messages", 0, "role")` -> `messages[0].role`; union member tags are dropped."""
    parts: list[str] = []
    for item in loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc:
        if isinstance(item, int):
            if not parts:
                break
            parts[-1] += f"[{item}]"
        elif isinstance(item, str) and _FIELD.fullmatch(item) and item not in _TYPE_TAGS:
            parts.append(item)
        else:
            break
    return ".".join(parts) or None


def validation_body(exc: RequestValidationError) -> ErrorResponse:
    errors = exc.errors()
    # in a union (`input: str | list[...]`) a check that failed in the branch whose type matched
    # says more than the other branches' type mismatches, which pydantic lists first
    checks = [e for e in errors if e.get("type") == "value_error"]
    first = (checks or errors or [{"loc": (), "msg": "invalid request"}])[0]
    param = field_path(tuple(first.get("loc", ())))
    message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    if param is not None:
        message = f"{message}, field: '{param}'"
    return ErrorResponse(
        error=ErrorDetail(message=message, type="invalid_request_error", param=param, code="INVALID_ARGUMENT")
    )


async def _on_validation(request: Request, exc: RequestValidationError) -> Response:
    record_refusal(request, 400)
    return json_error(400, validation_body(exc), request)


async def _on_http(request: Request, exc: StarletteHTTPException) -> Response:
    error_type, code = _HTTP_ERRORS.get(exc.status_code, ("invalid_request_error", None))
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"No route for {request.method} {request.url.path}"
    body = ErrorResponse(error=ErrorDetail(message=message, type=error_type, code=code))
    return json_error(exc.status_code, body, request, dict(exc.headers or {}))


async def _on_serving(request: Request, exc: Exception) -> Response:
    record_refusal(request, status_of(exc))
    headers = {"retry-after": RETRY_AFTER_S} if isinstance(exc, QueueFullError) else None
    if isinstance(exc, EngineUnavailableError):
        headers = {"retry-after": str(exc.retry_after_s)}
    if isinstance(exc, RateLimitedError):
        headers = exc.headers
    return json_error(status_of(exc), error_response(exc), request, headers)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    # the traceback itself is logged by the server once this handler has answered
    request_id = getattr(request.state, "request_id", None)
    logger.error(
        "unexpected %s in %s %s (request %s)", type(exc).__name__, request.method, request.url.path, request_id
    )
    return json_error(500, error_response(exc), request)


async def _on_disconnect(request: Request, exc: ClientDisconnected) -> Response:
    return Response(status_code=CLIENT_CLOSED)  # nobody reads it; the engine work is already aborted


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ClientDisconnected, _on_disconnect)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _on_validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _on_http)  # type: ignore[arg-type]
    app.add_exception_handler(ServingError, _on_serving)
    app.add_exception_handler(EngineError, _on_serving)
    app.add_exception_handler(Exception, _on_unexpected)
