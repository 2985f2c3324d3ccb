"""Hardening (issue 19): the request-body limit (`--max-request-bytes`), enforced while reading."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import serve_in_thread

MODEL = "accounts/fireworks/models/fake-chatml"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}]}
LIMIT = 4096


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


@pytest.fixture(scope="module")
def small_limit_server() -> Iterator[tuple[str, object]]:
    """A server whose bodies may be at most LIMIT bytes, with auth on."""
    from firebox.api.app import create_app
    from firebox.config import ServerConfig
    from firebox.serving.auth import StaticKeyAuthenticator
    from firebox.serving.registry import ModelRegistry
    from tests.fakes import FakeEngine

    engine = FakeEngine()
    registry = ModelRegistry()
    registry.add(engine.name, engine)
    config = ServerConfig(max_request_bytes=LIMIT, api_keys=("k",))
    with serve_in_thread(create_app(registry, StaticKeyAuthenticator(("k",)), config=config)) as url:
        yield url, engine


def _big_chat(size: int) -> bytes:
    return json.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * size}]}).encode()


def test_a_declared_body_over_the_limit_is_a_413_before_it_is_read(small_limit_server) -> None:
    url, engine = small_limit_server
    headers = {"authorization": "Bearer k", "content-type": "application/json"}
    response = httpx.post(f"{url}/v1/chat/completions", content=_big_chat(LIMIT), headers=headers)
    error = _error(response, 413)
    assert error["code"] == "PAYLOAD_TOO_LARGE" and str(LIMIT) in error["message"]
    assert not engine.submitted


def test_a_chunked_body_over_the_limit_is_a_413(small_limit_server) -> None:
    url, engine = small_limit_server
    body = _big_chat(3 * LIMIT)

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it arrives
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    headers = {"authorization": "Bearer k", "content-type": "application/json"}
    response = httpx.post(f"{url}/v1/chat/completions", content=chunks(), headers=headers)
    assert _error(response, 413)["code"] == "PAYLOAD_TOO_LARGE"
    assert not engine.submitted


def test_the_limit_holds_before_authentication(small_limit_server) -> None:
    url, _ = small_limit_server
    response = httpx.post(f"{url}/v1/chat/completions", content=_big_chat(LIMIT), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_a_body_within_the_limit_is_served(small_limit_server) -> None:
    url, _ = small_limit_server
    headers = {"authorization": "Bearer k", "content-type": "application/json"}
    response = httpx.post(f"{url}/v1/chat/completions", content=_big_chat(100), headers=headers)
    assert response.status_code == 200, response.text
