"""`GET /metrics`: Prometheus text exposition of the platform registry. It answers without a key
(as in vLLM: scrapers sit inside the operator's network), but only admins (and an open server)
see every model: other callers get the samples of the models they may see (public ones, and
their own account's), so that the labels tell nobody another account's model names."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

from fastapi import APIRouter, Request, Response

from firebox.api.visibility import visible_model_names
from firebox.platform.prometheus import PlatformMetrics

_MODEL_LABEL = re.compile(rb'model_name="((?:[^"\\]|\\.)*)"')


def metrics_router(metrics: PlatformMetrics) -> APIRouter:
    router = APIRouter(tags=["metrics"])

    @router.get("/metrics")
    async def get_metrics(request: Request) -> Response:
        is_visible = await visible_model_names(request)
        content, content_type = await asyncio.to_thread(metrics.render)
        if is_visible is not None:
            content = samples_of_visible_models(content, is_visible)
        return Response(content=content, media_type=content_type)

    return router


def samples_of_visible_models(content: bytes, is_visible: Callable[[str], bool]) -> bytes:
    """The exposition text without the samples labelled with a model `is_visible` refuses (the
    requests refused before serving, under an empty model name, name none)."""
    kept = []
    for line in content.splitlines(keepends=True):
        match = _MODEL_LABEL.search(line)
        if match is None or not match[1] or is_visible(match[1].decode("unicode_escape")):  # "": refusals
            kept.append(line)
    return b"".join(kept)
