"""`GET /models` and `GET /models/{name}` (full `accounts/<a>/models/<id>` or short names)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from firebox.api.deps import app_state, authenticate, may_use, resolve_model
from firebox.api.replies import json_response
from firebox.serving.models import get_model, list_models

router = APIRouter(tags=["models"], dependencies=[Depends(authenticate)])


@router.get("/models")
async def list_served_models(request: Request) -> Response:
    principal = request.state.principal
    registry = app_state(request).registry
    return json_response(list_models(registry, lambda account, public: may_use(principal, account, public)))


@router.get("/models/{name:path}")
async def get_served_model(name: str, request: Request) -> Response:
    return json_response(get_model(resolve_model(request, name)))
