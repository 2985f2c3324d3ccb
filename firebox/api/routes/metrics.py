"""`GET /metrics`: Prometheus text exposition of the platform registry (unauthenticated, as in
vLLM: scrapers sit inside the operator's network)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from firebox.platform.prometheus import PlatformMetrics


def metrics_router(metrics: PlatformMetrics) -> APIRouter:
    router = APIRouter(tags=["metrics"])

    @router.get("/metrics")
    def get_metrics() -> Response:
        content, content_type = metrics.render()
        return Response(content=content, media_type=content_type)

    return router
