"""API keys: 401 without or with a wrong key when keys are configured; open access otherwise."""

from __future__ import annotations

import fireworks
import httpx
import openai
import pytest

from tests.conftest import API_KEY

MODEL = "accounts/fireworks/models/fake-chatml"
HELLO = [{"role": "user", "content": "Hello"}]


def test_right_key_is_accepted(keyed_server) -> None:
    response = keyed_server.openai(api_key=API_KEY).chat.completions.create(model=MODEL, messages=HELLO, max_tokens=1)
    assert response.choices[0].finish_reason == "length"
    assert keyed_server.records[-1].key_id and keyed_server.records[-1].account_id == "fireworks"


def test_wrong_key_is_a_401(keyed_server) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        keyed_server.openai(api_key="wrong").chat.completions.create(model=MODEL, messages=HELLO)
    assert info.value.body["type"] == "authentication_error" and info.value.body["message"] == "Invalid API key"
    with pytest.raises(fireworks.AuthenticationError):
        keyed_server.fireworks(api_key="wrong").completions.create(model=MODEL, prompt="x")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/inference/v1/completions", "/v1/tokenize", "/tokenize"])
def test_missing_key_is_a_401_on_every_route(keyed_server, path: str) -> None:
    with httpx.Client(base_url=keyed_server.url) as http:
        response = http.post(path, json={"model": MODEL, "prompt": "x", "messages": HELLO})
    assert response.status_code == 401 and "Missing API key" in response.json()["error"]["message"]


def test_models_need_a_key_but_health_does_not(keyed_server) -> None:
    with httpx.Client(base_url=keyed_server.url) as http:
        assert http.get("/v1/models").status_code == 401
        assert http.get("/v1/models", headers={"authorization": f"Bearer {API_KEY}"}).status_code == 200
        assert http.get("/health").status_code == 200


def test_open_server_takes_any_key_or_none(server) -> None:
    assert server.openai(api_key="whatever").chat.completions.create(model=MODEL, messages=HELLO, max_tokens=1).choices
    with httpx.Client(base_url=server.url) as http:
        response = http.post("/v1/chat/completions", json={"model": MODEL, "messages": HELLO, "max_tokens": 1})
    assert response.status_code == 200
    assert server.records[-1].key_id is None and server.records[-1].account_id == "fireworks"
