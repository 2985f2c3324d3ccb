"""`POST /completions`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from firebox.api.deps import app_state, inference_context, resolve_model
from firebox.api.replies import to_response
from firebox.api.sse import cancel_on_disconnect
from firebox.protocol.completions import CompletionRequest
from firebox.serving.records import RequestContext

router = APIRouter(tags=["inference"])


@router.post("/completions")
async def create_completion(
    body: CompletionRequest,
    request: Request,
    ctx: Annotated[RequestContext, Depends(inference_context("completions"))],
) -> Response:
    handle = resolve_model(request, body.model)
    result = await cancel_on_disconnect(request, app_state(request).completions.create(body, handle, ctx))
    return to_response(result)
