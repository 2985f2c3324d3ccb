"""Hardening (issue 19): caps on list and string lengths, strict types, bounded integers."""

from __future__ import annotations

import httpx
import pytest

MODEL = "accounts/fireworks/models/fake-chatml"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}]}


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


def _post(server, path: str, body: object) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body)


@pytest.mark.parametrize(
    ("path", "body", "param", "says"),
    [
        ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": "x"}] * 10_001}, "messages", "at most"),
        ("/v1/completions", {"model": MODEL, "prompt": ["x"] * 257}, "prompt", ""),
        ("/v1/chat/completions", {**CHAT, "metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "at most"),
        ("/v1/chat/completions", {**CHAT, "metadata": {"k" * 65: "v"}}, "metadata", "at most"),
        ("/v1/chat/completions", {**CHAT, "metadata": {"k": "v" * 513}}, "metadata", "at most"),
        ("/v1/chat/completions", {**CHAT, "metadata": {"k": "a\x00b"}}, "metadata", "NUL"),
        ("/v1/chat/completions", {**CHAT, "user": "u" * 257}, "user", "at most"),
        ("/v1/chat/completions", {**CHAT, "user": "a\x00b"}, "user", "NUL"),
        ("/v1/responses", {"model": MODEL, "input": "hi", "user": "u" * 257}, "user", "at most"),
        ("/v1/chat/completions", {**CHAT, "prompt_cache_key": "k" * 257}, "prompt_cache_key", "at most"),
        ("/v1/chat/completions", {**CHAT, "tools": [{"type": "function", "function": {"name": "f"}}] * 129}, "tools", "at most"),
        ("/v1/chat/completions", {**CHAT, "logit_bias": {str(i): 1.0 for i in range(301)}}, "logit_bias", "at most"),
        ("/v1/chat/completions", {**CHAT, "stop": "s" * 257}, "stop", "at most"),
        ("/v1/chat/completions", {**CHAT, "stop": ["s" * 257]}, "stop", ""),
    ],
)
def test_lists_and_strings_over_their_caps_are_a_400(server, path: str, body: dict, param: str, says: str) -> None:
    error = _error(_post(server, path, body), 400)
    assert error["param"] == param and says in error["message"], error
    assert not server.engine.submitted


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("logprobs", "yes"),
        ("logprobs", "true"),
        ("stream", "false"),
        ("echo", 1),
        ("max_tokens", "5"),
        ("max_tokens", 5.0),
        ("max_tokens", 2**31),
        ("n", "2"),
        ("temperature", "0.5"),
        ("top_k", "5"),
        ("top_k", -2),
        ("seed", 2**63),
        ("seed", "1"),
        ("stream_options", {"include_usage": "yes"}),
    ],
)
def test_strings_are_not_coerced_and_integers_are_bounded(server, field: str, value: object) -> None:
    body = {**CHAT, field: value}
    if field == "stream_options":
        body["stream"] = True
    error = _error(_post(server, "/v1/chat/completions", body), 400)
    assert error["param"] is not None and error["param"].startswith(field), error
    assert not server.engine.submitted


def test_top_k_minus_one_means_off(server) -> None:
    response = _post(server, "/v1/chat/completions", {**CHAT, "top_k": -1})
    assert response.status_code == 200, response.text
    assert server.engine.submitted[-1].sampling.top_k == 0


def test_the_openapi_document_states_the_bounds(server) -> None:
    schema = httpx.get(f"{server.url}/openapi.json").json()["components"]["schemas"]["ChatCompletionRequest"]
    props = schema["properties"]
    assert schema["additionalProperties"] is False
    assert props["messages"]["maxItems"] == 10_000
    assert {"type": "integer", "minimum": 0, "maximum": 2**31 - 1} in props["max_tokens"]["anyOf"]
    assert {"type": "string", "maxLength": 256} in props["user"]["anyOf"]


@pytest.mark.parametrize(("field", "value"), [("max_output_tokens", 2**31), ("max_output_tokens", "5"), ("max_tool_calls", 2**31)])
def test_responses_counts_are_bounded_like_max_tokens(server, field: str, value: object) -> None:
    body = {"model": MODEL, "input": "Hello", "store": False, field: value}
    error = _error(_post(server, "/v1/responses", body), 400)
    assert error["param"] == field, error
    assert not server.engine.submitted


def test_the_largest_max_output_tokens_is_accepted(server) -> None:
    body = {"model": MODEL, "input": "Hello", "store": False, "max_output_tokens": 2**31 - 1}
    assert _post(server, "/v1/responses", body).status_code == 200
