"""Errors raised by the platform layer; the API layer maps each to an HTTP status."""

from __future__ import annotations


class PlatformError(Exception):
    """Base class; `code` is the gRPC-style name Fireworks puts in control-plane errors."""

    code = "UNKNOWN"


class InvalidArgumentError(PlatformError, ValueError):
    code = "INVALID_ARGUMENT"


class NotFoundError(PlatformError):
    code = "NOT_FOUND"


class AlreadyExistsError(PlatformError):
    code = "ALREADY_EXISTS"


class PermissionDeniedError(PlatformError):
    code = "PERMISSION_DENIED"


class UnauthenticatedError(PlatformError):
    code = "UNAUTHENTICATED"


class ResourceExhaustedError(PlatformError):
    """Over a quota or this server's capacity (a 429)."""

    code = "RESOURCE_EXHAUSTED"
