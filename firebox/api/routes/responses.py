"""`POST /responses` and the stored responses: `GET /responses`, `GET` / `DELETE /responses/{id}`,
`GET /responses/{id}/input_items`. Streams are OpenAI's typed SSE: `event: <type>` + `data: <json>`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.responses import StreamingResponse

from firebox.api.deps import app_state, authenticate, inference_context, resolve_model
from firebox.api.headers import serve_headers
from firebox.api.replies import json_response
from firebox.api.sse import STREAM_HEADERS, EventStreamResponse, cancel_on_disconnect
from firebox.protocol.response_events import ResponseEvent
from firebox.protocol.responses import ResponseCreateRequest
from firebox.serving.auth import Principal
from firebox.serving.errors import InvalidRequestError
from firebox.serving.records import RequestContext
from firebox.serving.responses.service import ResponsesService
from firebox.serving.generation.service import Streaming

router = APIRouter(tags=["inference"])

Limit = Annotated[int, Query(ge=1, le=100)]
Order = Annotated[Literal["asc", "desc"], Query()]


async def typed_frames(events: AsyncIterator[ResponseEvent]) -> AsyncIterator[bytes]:
    try:
        async for event in events:
            yield f"event: {event.type}\ndata: ".encode() + event.model_dump_json().encode() + b"\n\n"
    finally:
        await events.aclose()  # type: ignore[attr-defined]


class TypedEventStreamResponse(EventStreamResponse):
    """The event-stream response (closing its iterator on disconnect), with typed events."""

    def __init__(self, events: AsyncIterator[ResponseEvent], headers: Mapping[str, str]) -> None:
        StreamingResponse.__init__(self, typed_frames(events), headers={**STREAM_HEADERS, **headers})


def service(request: Request) -> ResponsesService:
    responses = app_state(request).responses
    if responses is None:
        raise RuntimeError("the app was built without a responses service")
    return responses


@router.post("/responses")
async def create_response(
    body: ResponseCreateRequest,
    request: Request,
    ctx: Annotated[RequestContext, Depends(inference_context("responses"))],
) -> Response:
    handle = resolve_model(request, body.model)
    result = await cancel_on_disconnect(request, service(request).create(body, handle, ctx))
    if isinstance(result, Streaming):
        return TypedEventStreamResponse(result.chunks, serve_headers(result.meta))  # type: ignore[arg-type]
    return json_response(result.body, serve_headers(result.meta))


@router.get("/responses")
async def list_responses(
    request: Request,
    principal: Annotated[Principal, Depends(authenticate)],
    limit: Limit = 20,
    after: str | None = None,
    before: str | None = None,
    order: Order = "desc",
) -> Response:
    return json_response(await service(request).list(principal, limit, after, before, order))


@router.get("/responses/{response_id}")
async def retrieve_response(
    response_id: str, request: Request, principal: Annotated[Principal, Depends(authenticate)], stream: bool = False
) -> Response:
    if stream:
        raise InvalidRequestError("streaming a stored response again is not supported", param="stream")
    body = await service(request).retrieve(principal, response_id)
    return Response(orjson.dumps(body), media_type="application/json")


@router.delete("/responses/{response_id}")
async def delete_response(
    response_id: str, request: Request, principal: Annotated[Principal, Depends(authenticate)]
) -> Response:
    return json_response(await service(request).delete(principal, response_id))


@router.get("/responses/{response_id}/input_items")
async def list_input_items(
    response_id: str,
    request: Request,
    principal: Annotated[Principal, Depends(authenticate)],
    limit: Limit = 20,
    after: str | None = None,
    order: Order = "desc",
) -> Response:
    return json_response(await service(request).input_items(principal, response_id, limit, after, order))
