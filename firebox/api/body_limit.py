"""The request-body limit (`--max-request-bytes`), as ASGI middleware in front of every route.

A declared `Content-Length` over the limit is answered with 413 before a byte of the body is
read; a body without one (chunked) is counted while it arrives and refused as soon as it passes
the limit. Either way nothing is parsed: the routes only see bodies within the limit, read whole
here and handed on in one piece.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from firebox.protocol.common import ErrorDetail, ErrorResponse


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return
        body = await self._read_within_limit(receive)
        if body is None:
            await self._refuse(send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read_within_limit(self, receive: Receive) -> bytes | None:
        """The whole body, or None once it passes the limit (the rest is left unread)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left: the app will see it too
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _refuse(self, send: Send) -> None:
        message = f"request body is larger than the limit of {self.max_bytes} bytes (--max-request-bytes)"
        error = ErrorDetail(message=message, type="invalid_request_error", code="PAYLOAD_TOO_LARGE")
        content = ErrorResponse(error=error).model_dump_json().encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode()),
                   (b"connection", b"close")]  # fmt: skip
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": content})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the body read here first, then the client's own messages
    (a disconnect while streaming the answer)."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replayed
