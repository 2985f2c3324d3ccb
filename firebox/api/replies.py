"""Service results -> HTTP replies (a JSON body, or an SSE stream) with the `fireworks-*` headers."""

from __future__ import annotations

from fastapi.responses import Response

from firebox.api.headers import serve_headers
from firebox.api.sse import EventStreamResponse
from firebox.protocol.common import ResponseModel
from firebox.serving.generation.service import Completed, Streaming


def json_response(body: ResponseModel, headers: dict[str, str] | None = None) -> Response:
    return Response(body.model_dump_json(), media_type="application/json", headers=headers)


def to_response(result: Completed | Streaming) -> Response:
    if isinstance(result, Streaming):
        return EventStreamResponse(result.chunks, serve_headers(result.meta))
    return json_response(result.body, serve_headers(result.meta))
