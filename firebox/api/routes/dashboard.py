"""`GET /dashboard`: the usage dashboard and chat playground, a static page that signs in with an
API key and talks to the public API (`/v1/accounts`, `/v1/accounts/{id}/usage`, `/v1/models`,
`/v1/chat/completions`) like any other client."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from firebox.api.routes.platform_common import PlatformRoute
from firebox.platform.errors import NotFoundError

STATIC_DIR = Path(__file__).resolve().parent.parent / "static" / "dashboard"
_ASSETS = {"app.js": "text/javascript", "charts.js": "text/javascript", "style.css": "text/css"}
# the page loads only its own scripts and styles, talks only to this server, and may not be framed
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


def dashboard_router() -> APIRouter:
    router = APIRouter(route_class=PlatformRoute, tags=["dashboard"])

    @router.get("/dashboard", response_class=HTMLResponse)
    def dashboard_page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=SECURITY_HEADERS)

    @router.get("/dashboard/{asset}")
    def dashboard_asset(asset: str) -> FileResponse:
        if asset not in _ASSETS:
            raise NotFoundError(f"no dashboard asset {asset!r}")
        return FileResponse(STATIC_DIR / asset, media_type=_ASSETS[asset], headers=SECURITY_HEADERS)

    return router
