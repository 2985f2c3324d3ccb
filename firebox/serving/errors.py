"""Errors of the API semantics, each with the status the API answers it with.

The serving layer raises these; `api/errors.py` turns them (and the engine's errors) into
OpenAI-shaped bodies. `status_of` is the one table from exception to status, so that a request
record and the HTTP answer always agree.
"""

from __future__ import annotations

from firebox.engine.types import (
    EngineDeadError,
    PromptTooLongError,
    QueueFullError,
    RequestFailedError,
    SlowReaderError,
)
from firebox.protocol.common import ErrorDetail, ErrorResponse


class ServingError(Exception):
    """Base: a message meant for the client, the parameter at fault and an error code."""

    status_code = 500
    error_type = "server_error"
    code: str | None = "INTERNAL"

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class InvalidRequestError(ServingError):
    status_code = 400
    error_type = "invalid_request_error"
    code = "INVALID_ARGUMENT"


class ContextLengthError(InvalidRequestError):
    """Prompt (plus max_tokens, under behavior "error") over the model's context length."""

    code = "context_length_exceeded"


class ModelNotFoundError(ServingError):
    status_code = 404
    error_type = "not_found_error"
    code = "NOT_FOUND"

    def __init__(self, name: str) -> None:
        super().__init__(f"Model not found, inaccessible, and/or not deployed: {name!r}", param="model")


class AuthenticationError(ServingError):
    status_code = 401
    error_type = "authentication_error"
    code = "UNAUTHENTICATED"


class RateLimitedError(ServingError):
    """The key is over its requests- or tokens-per-minute limit; `headers` say when to retry."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.headers = headers


class ShuttingDownError(ServingError):
    status_code = 503
    error_type = "service_unavailable"
    code = "UNAVAILABLE"


class UsageUnavailableError(ShuttingDownError):
    """Usage cannot be recorded (the journal cannot be written): refused, rather than served unbilled."""

    def __init__(self) -> None:
        super().__init__("usage cannot be recorded on this server right now; the request was not served")


INTERNAL_ERROR_MESSAGE = "Internal server error; the request id in x-request-id identifies it in the server log"

# engine error -> (status, type, code, message when it has none)
_ENGINE_ERRORS: dict[type[Exception], tuple[int, str, str, str]] = {
    PromptTooLongError: (400, "invalid_request_error", "context_length_exceeded", "the prompt is too long"),
    QueueFullError: (429, "rate_limit_error", "RESOURCE_EXHAUSTED", "the server is at capacity; retry later"),
    EngineDeadError: (503, "service_unavailable", "UNAVAILABLE", "the engine is not running"),
    RequestFailedError: (500, "server_error", "INTERNAL", "the engine failed while running this request"),
    SlowReaderError: (408, "timeout_error", "SLOW_READER", "the stream was read too slowly and was cut"),
}


def _engine_error(exc: BaseException) -> tuple[int, str, str, str] | None:
    return next((row for kind, row in _ENGINE_ERRORS.items() if isinstance(exc, kind)), None)


def status_of(exc: BaseException) -> int:
    """The HTTP status that answers `exc`."""
    if isinstance(exc, ServingError):
        return exc.status_code
    row = _engine_error(exc)
    return 500 if row is None else row[0]


def error_response(exc: BaseException) -> ErrorResponse:
    """The OpenAI-shaped body for `exc`; anything unexpected gets a generic message."""
    if isinstance(exc, ServingError):
        detail = ErrorDetail(message=exc.message, type=exc.error_type, param=exc.param, code=exc.code)
        return ErrorResponse(error=detail)
    row = _engine_error(exc)
    if row is None:
        return ErrorResponse(error=ErrorDetail(message=INTERNAL_ERROR_MESSAGE, type="server_error", code="INTERNAL"))
    _, error_type, code, default_message = row
    return ErrorResponse(error=ErrorDetail(message=str(exc) or default_message, type=error_type, code=code))
