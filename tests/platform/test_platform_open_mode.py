"""Hardening (issue 19, item 10): an open server (no key anywhere) serves inference to anyone but
refuses the control plane, where anyone would be its admin; the dashboard's security headers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from platform_helpers import platform_app

from firebox.api.app import create_app
from firebox.api.routes.control_plane import control_plane_router
from firebox.platform.services import Platform
from firebox.serving.registry import ModelRegistry
from tests.conftest import serve_in_thread
from tests.fakes import FakeEngine

MODEL = "accounts/fireworks/models/fake-chatml"


@pytest.fixture
def database_url() -> None:
    return None


@pytest.fixture
def open_server(data_dir: Path) -> Iterator[tuple[str, Platform]]:
    platform = Platform.open(data_dir, None, admin_keys=())
    registry = ModelRegistry()
    registry.add(MODEL, FakeEngine())
    routers = [control_plane_router(platform.accounts, platform.keys, platform.authenticator)]
    app = create_app(registry, platform.authenticator, platform.completion_callbacks(), extra_routers=routers)
    try:
        with serve_in_thread(app) as url:
            yield url, platform
    finally:
        platform.close()


def test_an_open_server_serves_inference_but_refuses_the_control_plane(open_server) -> None:
    url, platform = open_server
    assert platform.authenticator.is_open()
    chat = httpx.post(f"{url}/v1/chat/completions",
                      json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})  # fmt: skip
    assert chat.status_code == 200
    for method, path, body in [("GET", "/v1/accounts", None), ("POST", "/v1/accounts", {"accountId": "evil"}),
                               ("POST", "/v1/accounts/fireworks/users/alice/apiKeys", {})]:  # fmt: skip
        response = httpx.request(method, f"{url}{path}", json=body, headers={"authorization": "Bearer anything"})
        assert response.status_code == 403, (path, response.text)
        assert "firebox keys create" in response.json()["error"]["message"]
    assert platform.authenticator.is_open()  # nobody minted a key through the open door


def test_the_dashboard_is_served_with_security_headers(platform: Platform) -> None:
    client = TestClient(platform_app(platform))
    for path in ("/dashboard", "/dashboard/app.js", "/dashboard/style.css"):
        headers = client.get(path).headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "script-src 'self'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
