"""Anthropic's `POST /messages` and `POST /messages/count_tokens`. Streams are Anthropic's typed
SSE (`event: <type>` + `data: <json>`, no `[DONE]`); errors are Anthropic-shaped (api/errors.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from firebox.api.deps import app_state, authenticate, inference_context, resolve_model
from firebox.api.headers import serve_headers
from firebox.api.replies import json_response
from firebox.api.routes.responses import TypedEventStreamResponse
from firebox.api.sse import cancel_on_disconnect
from firebox.protocol.messages import MessagesPrompt, MessagesRequest
from firebox.serving.records import RequestContext
from firebox.serving.generation.service import Streaming

router = APIRouter(tags=["inference"])


@router.post("/messages")
async def create_message(
    body: MessagesRequest,
    request: Request,
    ctx: Annotated[RequestContext, Depends(inference_context("messages"))],
) -> Response:
    handle = resolve_model(request, body.model)
    result = await cancel_on_disconnect(request, app_state(request).messages.create(body, handle, ctx))
    if isinstance(result, Streaming):
        return TypedEventStreamResponse(result.chunks, serve_headers(result.meta))  # type: ignore[arg-type]
    return json_response(result.body, serve_headers(result.meta))


@router.post("/messages/count_tokens", dependencies=[Depends(authenticate)])
async def count_message_tokens(body: MessagesPrompt, request: Request) -> Response:
    return json_response(app_state(request).messages.count_tokens(body, resolve_model(request, body.model)))
