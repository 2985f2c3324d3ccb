"""`GET /health`: 200 while serving, 503 once shutting down (no auth, for load balancers)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from firebox.api.deps import app_state

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(request: Request) -> JSONResponse:
    state = app_state(request)
    if state.lifecycle.is_draining:
        return JSONResponse({"status": "shutting down"}, status_code=503)
    return JSONResponse({"status": "ok", "models": [m.name for m in state.registry]})
