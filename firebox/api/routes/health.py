"""`GET /health`: 200 while serving, 503 once shutting down or while a model's engine is down
(no auth, for load balancers). The models listed, and named under `unavailable`, are those the
caller may see: public ones, and with a key its account's own."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from firebox.api.deps import app_state
from firebox.api.visibility import visible_model_names

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    state = app_state(request)
    if state.lifecycle.is_draining:
        return JSONResponse({"status": "shutting down"}, status_code=503)
    is_visible = await visible_model_names(request)
    models = [m for m in state.registry if is_visible is None or is_visible(m.name)]
    names = [m.name for m in models]
    if any(not getattr(m.engine, "is_alive", True) for m in state.registry):
        down = [m.name for m in models if not getattr(m.engine, "is_alive", True)]
        return JSONResponse({"status": "unavailable", "models": names, "unavailable": down}, status_code=503)
    return JSONResponse({"status": "ok", "models": names})
