"""The Host allow-list (`--allowed-hosts`), as ASGI middleware in front of every route.

A web page can reach a server on the visitor's own machine by DNS rebinding: its name comes to
resolve to 127.0.0.1, and the browser sends the page's name as `Host`. Answering only the names
the server is known by (the localhost names, the bound host, and those the operator lists)
closes that door; `*` opens it for a server behind a proxy that checks names itself.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from firebox.protocol.common import ErrorDetail, ErrorResponse

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
_WILDCARD_BINDS = ("", "0.0.0.0", "::")


def allowed_host_names(bind_host: str, extra: Iterable[str]) -> frozenset[str]:
    """The localhost names, the bound host (unless it is a wildcard address) and `extra`."""
    names = {*LOCAL_HOSTS, *(name.strip().lower() for name in extra if name.strip())}
    if bind_host not in _WILDCARD_BINDS:
        names.add(bind_host.lower())
    return frozenset(names)


def host_name(header: str) -> str:
    """`example.com:8000` -> `example.com`; `[::1]:8000` -> `::1`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


class AllowedHosts:
    def __init__(self, app: ASGIApp, hosts: frozenset[str]) -> None:
        self.app = app
        self.hosts = hosts
        self.allows_any = "*" in hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.allows_any:
            await self.app(scope, receive, send)
            return
        header = next((value for name, value in scope.get("headers", ()) if name == b"host"), None)
        # no Host header: no browser sent it (HTTP/1.1 browsers always send one)
        if header is None or host_name(header.decode("latin-1")) in self.hosts:
            await self.app(scope, receive, send)
            return
        await self._refuse(send, header.decode("latin-1"))

    async def _refuse(self, send: Send, header: str) -> None:
        message = f"Host {header!r} is not allowed; the operator can add it with --allowed-hosts"
        error = ErrorDetail(message=message, type="invalid_request_error", code="HOST_NOT_ALLOWED")
        content = ErrorResponse(error=error).model_dump_json().encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
        await send({"type": "http.response.start", "status": 400, "headers": headers})
        await send({"type": "http.response.body", "body": content})
