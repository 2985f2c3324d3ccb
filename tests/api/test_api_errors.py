"""Every refusal: OpenAI-shaped body, the right status, the field named; never a 500 for bad input."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.conftest import wait_until

MODEL = "accounts/fireworks/models/fake-chatml"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}]}


def _post(server, path: str, body: object, **kwargs) -> httpx.Response:
    with httpx.Client(base_url=server.url) as http:
        if isinstance(body, (bytes, str)):
            return http.post(path, content=body, headers={"content-type": "application/json"}, **kwargs)
        return http.post(path, json=body, **kwargs)


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_unknown_field_is_a_400_naming_it(server) -> None:
    error = _error(_post(server, "/v1/chat/completions", {**CHAT, "frobnicate": 1}), 400)
    assert error["message"] == "Extra inputs are not permitted, field: 'frobnicate'" and error["param"] == "frobnicate"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("reasoning_effort", "high"),
        ("reasoning_history", "preserved"),
        ("thinking", {"type": "enabled", "budget_tokens": 2048}),
        ("mirostat_target", 5.0),
        ("mirostat_lr", 0.1),
        ("safe_tokenization", True),
        ("prompt_cache_max_len", 0),
    ],
)
def test_unsupported_parameters_are_a_400_naming_them(server, field: str, value: object) -> None:
    error = _error(_post(server, "/v1/chat/completions", {**CHAT, field: value}), 400)
    assert error["param"] == field and f"'{field}' is not supported" in error["message"]
    assert not server.engine.submitted


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tools", []),
        ("tool_choice", "none"),
        ("response_format", {"type": "text"}),
        ("reasoning_effort", "none"),
        ("thinking", {"type": "disabled"}),
    ],
)
def test_neutral_values_of_unsupported_parameters_pass(client, field: str, value: object) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=CHAT["messages"], max_tokens=1, extra_body={field: value}
    )
    assert response.choices[0].finish_reason == "length"


def test_images_in_completions_are_refused(server) -> None:
    error = _error(
        _post(server, "/v1/completions", {"model": MODEL, "prompt": "<image>", "images": ["data:image/png;base64,AA"]}),
        400,
    )
    assert error["param"] == "images"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({**CHAT, "temperature": 2.5}, "temperature"),
        ({**CHAT, "top_p": 0}, "top_p"),
        ({**CHAT, "n": 0}, "n"),
        ({**CHAT, "n": 129}, "n"),
        ({**CHAT, "top_logprobs": 21, "logprobs": True}, "top_logprobs"),
        ({**CHAT, "logprobs": 99}, "logprobs"),
        ({**CHAT, "max_tokens": -1}, "max_tokens"),
        ({**CHAT, "frequency_penalty": 3}, "frequency_penalty"),
        ({**CHAT, "logit_bias": {"abc": 1}}, "logit_bias"),
        ({**CHAT, "logit_bias": {"5": 500}}, "logit_bias"),
        ({**CHAT, "stop": ["ok", ""]}, "stop"),
        ({**CHAT, "context_length_exceeded_behavior": "explode"}, "context_length_exceeded_behavior"),
        ({"model": MODEL}, "messages"),
        ({**CHAT, "messages": []}, "messages"),
        ({**CHAT, "messages": "Hello"}, "messages"),
        ({**CHAT, "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({**CHAT, "messages": [{"role": "user", "content": "hi", "colour": "red"}]}, "messages[0].colour"),
        ({**CHAT, "top_logprobs": 2}, "top_logprobs"),
        ({**CHAT, "max_tokens": 5, "max_completion_tokens": 5}, "max_completion_tokens"),
        ({**CHAT, "stream_options": {"include_usage": True}}, "stream_options"),
        ({**CHAT, "logit_bias": {"100000": 1}}, "logit_bias"),
        ({**CHAT, "logit_bias": {"\u00b2": 1}}, "logit_bias"),  # a digit to str.isdigit, not to int()
        ({**CHAT, "top_k": 101}, "top_k"),
        ({**CHAT, "top_k": 10**30}, "top_k"),  # was a 500: the sampling-options header holds it
        ({**CHAT, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ],
)
def test_invalid_values_are_a_400_not_a_422(server, body: dict, param: str) -> None:
    error = _error(_post(server, "/v1/chat/completions", body), 400)
    assert error["param"] == param and error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": "\ud800"}]}, "messages[0].content"),
        ("/v1/completions", {"model": MODEL, "prompt": "hi \udc00"}, "prompt"),
        ("/v1/completions", {"model": MODEL, "prompt": "hi", "user": "\ud800"}, "user"),
        ("/v1/completions", {"model": MODEL, "prompt": "hi", "metadata": {"k": "\ud800"}}, "metadata"),
        ("/v1/tokenize", {"model": MODEL, "prompt": "\ud800"}, "prompt"),
        ("/v1/responses", {"model": MODEL, "input": [{"role": "user", "content": "\ud800"}]}, "input"),
    ],
)
def test_unpaired_surrogates_are_a_400_not_a_500(server, path: str, body: dict, param: str) -> None:
    # JSON may escape half a UTF-16 pair; the tokenizer (and the usage database) cannot take it
    raw = json.dumps(body).encode()  # ensure_ascii keeps the lone surrogate as a \ud800 escape
    error = _error(_post(server, path, raw), 400)
    assert error["param"] == param and "surrogate" in error["message"]
    assert not server.engine.submitted


def test_non_text_content_part_is_a_400(server) -> None:
    part = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    error = _error(
        _post(server, "/v1/chat/completions", {**CHAT, "messages": [{"role": "user", "content": [part]}]}), 400
    )
    assert error["param"] == "messages[0].content[0]"


@pytest.mark.parametrize("body", [b"{not json", b"[]", b"null", b'"text"', b""])
def test_malformed_bodies_are_a_400(server, body: bytes) -> None:
    _error(_post(server, "/v1/chat/completions", body), 400)


@pytest.mark.parametrize("prompt", [[], [[]], [-1], [1, "a"], {"a": 1}, None])
def test_bad_completion_prompts_are_a_400(server, prompt: object) -> None:
    error = _error(_post(server, "/v1/completions", {"model": MODEL, "prompt": prompt}), 400)
    assert error["param"] == "prompt"


def test_unknown_model_is_a_404_naming_model(client) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="accounts/fireworks/models/nope", messages=CHAT["messages"])
    assert info.value.body["param"] == "model" and "nope" in info.value.body["message"]


def test_unknown_route_and_wrong_method(server) -> None:
    with httpx.Client(base_url=server.url) as http:
        missing = http.post("/v1/embeddings", json={})
        wrong = http.get("/v1/chat/completions")
    assert _error(missing, 404)["type"] == "not_found_error"
    assert _error(wrong, 405)["message"] == "Method Not Allowed"


def test_prompt_too_long_is_a_400_with_both_numbers(client, server) -> None:
    long = [{"role": "user", "content": "Tell me a story " * 100}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=long)
    count = _post(server, "/v1/tokenize", {"model": MODEL, "messages": long}).json()["count"]
    message = info.value.body["message"]
    assert f"{count} tokens" in message and "256 tokens" in message and count > 256
    assert info.value.body["code"] == "context_length_exceeded" and info.value.body["param"] == "messages"
    assert not server.engine.submitted


def test_truncate_behaviour_keeps_the_most_recent_tokens(client, server) -> None:
    long = [{"role": "user", "content": "Tell me a story " * 100}]
    response = client.chat.completions.create(
        model=MODEL, messages=long, extra_body={"context_length_exceeded_behavior": "truncate"}
    )
    ids = server.engine.submitted[0].prompt_token_ids
    assert len(ids) == 255 and response.usage.prompt_tokens == 255
    assert server.engine.tokenizer.decode(ids, skip_special_tokens=False).endswith("<|im_start|>assistant\n")
    assert server.engine.submitted[0].sampling.max_tokens == 1


def test_error_behaviour_refuses_max_tokens_over_the_context(client, server) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model=MODEL,
            messages=CHAT["messages"],
            max_tokens=1000,
            extra_body={"context_length_exceeded_behavior": "error"},
        )
    assert "256" in info.value.body["message"] and info.value.body["param"] == "max_tokens"
    capped = client.chat.completions.create(
        model=MODEL, messages=CHAT["messages"], max_tokens=1000, extra_body={"ignore_eos": True}
    )
    assert capped.usage.total_tokens == 256 and capped.choices[0].finish_reason == "length"


@pytest.mark.parametrize("stream", [False, True])
def test_queue_full_is_a_429_with_retry_after(server, stream: bool) -> None:
    server.engine.queue_full = True
    response = _post(server, "/inference/v1/chat/completions", {**CHAT, "stream": stream})
    error = _error(response, 429)
    assert error["type"] == "rate_limit_error" and response.headers["retry-after"] == "1"
    assert response.headers["x-request-id"]


def test_engine_failure_mid_stream_ends_the_stream_with_an_error(client, server) -> None:
    server.engine.fail_after = 3
    stream = client.chat.completions.create(model=MODEL, messages=CHAT["messages"], stream=True)
    received = []
    with pytest.raises(openai.APIError, match="failed on purpose"):
        for chunk in stream:
            received.append(chunk)
    assert len(received) == 4  # the role chunk and three tokens


def test_draining_server_answers_503(server, client) -> None:
    server.lifecycle.is_draining = True
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model=MODEL, messages=CHAT["messages"])
    assert info.value.status_code == 503
    with httpx.Client(base_url=server.url) as http:
        assert http.get("/health").status_code == 503
    server.lifecycle.is_draining = False
    with httpx.Client(base_url=server.url) as http:
        assert http.get("/health").json()["status"] == "ok"


def test_empty_prompt_is_a_400(server) -> None:
    error = _error(_post(server, "/v1/completions", {"model": MODEL, "prompt": ""}), 400)
    assert error["param"] == "prompt" and "empty" in error["message"]


def test_unexpected_engine_error_is_a_generic_500(server, monkeypatch) -> None:
    async def broken(request):
        raise RuntimeError("secret internal detail")
        yield  # an async generator, like the real one

    monkeypatch.setattr(server.engine, "generate", broken)
    for stream in (False, True):
        response = _post(server, "/v1/chat/completions", {**CHAT, "stream": stream})
        error = _error(response, 500)
        assert "secret" not in error["message"] and error["type"] == "server_error"
        assert response.headers["x-request-id"]
    assert [r.status_code for r in server.records] == [500, 500]


def test_client_leaving_a_non_streamed_request_aborts_it(server) -> None:
    server.engine.token_delay = 0.01
    body = {**CHAT, "max_tokens": 1000, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        _post(server, "/v1/chat/completions", body, timeout=0.3)
    assert wait_until(lambda: len(server.engine.aborted) == 1 and not server.engine.running)
    assert wait_until(lambda: len(server.records) == 1)
    assert server.records[0].aborted and server.records[0].status_code == 499
    assert 0 < server.records[0].completion_tokens < 1000


@pytest.mark.parametrize("stream", [False, True])
def test_engine_dead_before_the_first_token_is_a_503(server, stream: bool) -> None:
    server.engine.fail_after = 0
    error = _error(_post(server, "/v1/chat/completions", {**CHAT, "stream": stream}), 503)
    assert error["type"] == "service_unavailable" and error["code"] == "UNAVAILABLE"
