"""Parsing and timing one stream: canned llama-server and firebox chunks, URLs and payloads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from firebox.bench.stream import RequestSettings, StreamTimer, build_payload, chunk_text, endpoint_url, sse_events
from firebox.bench.workload import BenchRequest

USAGE = {"completion_tokens": 3, "prompt_tokens": 4, "total_tokens": 7}

# what llama-server (b1-0c1e570) streams for /v1/completions with include_usage: usage only on the
# last chunk, which carries finish_reason and empty text
LLAMA_COMPLETIONS = [
    {"choices": [{"text": ".", "index": 0, "finish_reason": None}], "object": "text_completion"},
    {"choices": [{"text": " I", "index": 0, "finish_reason": None}], "object": "text_completion"},
    {"choices": [{"text": "'ve", "index": 0, "finish_reason": None}], "object": "text_completion"},
    {"choices": [{"text": "", "index": 0, "finish_reason": "length"}], "usage": USAGE, "timings": {"prompt_n": 4}},
]

# and for /v1/chat/completions: a role chunk first, usage on a final chunk with no choices
LLAMA_CHAT = [
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": None}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {"content": " there"}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {"content": "!"}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
    {"choices": [], "usage": USAGE},
]

# firebox: usage on the last content chunk, and again on an include_usage chunk with no choices
FIREBOX_COMPLETIONS = [
    {"choices": [{"index": 0, "text": "a", "finish_reason": None}], "usage": None},
    {"choices": [{"index": 0, "text": "b", "finish_reason": None}], "usage": None},
    {"choices": [{"index": 0, "text": "c", "finish_reason": "length"}], "usage": USAGE},
    {"choices": [], "usage": USAGE},
]


def fold(chunks: list[dict[str, Any]], times: list[float], max_tokens: int = 3) -> Any:
    timer = StreamTimer(max_tokens, sent_at=10.0)
    for chunk, now in zip(chunks, times, strict=True):
        timer.on_event(chunk, now)
    return timer.finish(times[-1] + 0.01)


def test_llama_server_completions_usage_on_the_final_chunk() -> None:
    result = fold(LLAMA_COMPLETIONS, [10.5, 10.6, 10.8, 10.81])
    assert result.is_ok and result.has_usage
    assert (result.prompt_tokens, result.output_tokens) == (4, 3)
    assert result.ttft == pytest.approx(0.5)
    assert result.itls == pytest.approx([0.1, 0.2])  # the empty finish chunk is no token
    assert result.latency == pytest.approx(0.82)


def test_llama_server_chat_role_chunk_is_not_the_first_token() -> None:
    result = fold(LLAMA_CHAT, [10.1, 10.3, 10.4, 10.5, 10.51, 10.52])
    assert result.is_ok and result.output_tokens == 3
    assert result.ttft == pytest.approx(0.3)
    assert result.itls == pytest.approx([0.1, 0.1])


def test_firebox_usage_on_content_chunk_and_include_usage_chunk() -> None:
    result = fold(FIREBOX_COMPLETIONS, [10.2, 10.3, 10.4, 10.41])
    assert (result.prompt_tokens, result.output_tokens, len(result.itls)) == (4, 3, 2)


def test_no_usage_falls_back_to_counting_content_chunks() -> None:
    chunks = [c for c in LLAMA_CHAT if not c.get("usage")]
    result = fold(chunks, [10.1, 10.2, 10.3, 10.4, 10.5], max_tokens=8)
    assert result.is_ok and not result.has_usage
    assert result.output_tokens == 3


def test_error_event_and_empty_stream_fail_the_request() -> None:
    result = fold([LLAMA_COMPLETIONS[0], {"error": {"message": "engine died"}}], [10.1, 10.2])
    assert not result.is_ok and result.error == "engine died"
    result = fold([{"choices": [], "usage": USAGE}], [10.1])
    assert not result.is_ok and "without generated text" in result.error


def test_chunk_text_forms() -> None:
    assert chunk_text({"choices": [{"text": "x"}]}) == "x"
    assert chunk_text({"choices": [{"delta": {"content": "y"}}]}) == "y"
    assert chunk_text({"choices": [{"delta": {"content": None}}]}) == ""
    assert chunk_text({"choices": []}) == ""


def test_sse_events_parses_data_lines_until_done() -> None:
    lines = [": keep-alive", 'data: {"a": 1}', "", "data:{\"b\": 2}", "event: x", "data: [DONE]", 'data: {"c": 3}']

    async def collect() -> list[dict[str, Any]]:
        async def source() -> AsyncIterator[str]:
            for line in lines:
                yield line

        return [event async for event in sse_events(source())]

    assert asyncio.run(collect()) == [{"a": 1}, {"b": 2}]


@pytest.mark.parametrize(
    ("base", "endpoint", "url"),
    [
        ("http://h:1", "completions", "http://h:1/v1/completions"),
        ("http://h:1/", "chat", "http://h:1/v1/chat/completions"),
        ("http://h:1/inference/v1/", "completions", "http://h:1/inference/v1/completions"),
    ],
)
def test_endpoint_url(base: str, endpoint: str, url: str) -> None:
    assert endpoint_url(base, endpoint) == url


def test_endpoint_url_rejects_unknown_endpoint() -> None:
    with pytest.raises(ValueError):
        endpoint_url("http://h:1", "embeddings")


def test_payloads_ask_for_usage_and_exact_length() -> None:
    settings = RequestSettings("u", "m", "completions")
    payload = build_payload(settings, BenchRequest("a b", 7))
    assert payload["prompt"] == "a b" and payload["max_tokens"] == 7
    assert payload["stream"] is True and payload["stream_options"] == {"include_usage": True}
    assert payload["ignore_eos"] is True and payload["temperature"] == 0.0
    chat = build_payload(RequestSettings("u", "m", "chat", ignore_eos=False), BenchRequest("a b", 7))
    assert chat["messages"] == [{"role": "user", "content": "a b"}] and "ignore_eos" not in chat
    conversation = ({"role": "system", "content": "s"}, {"role": "user", "content": "q"})
    assert build_payload(RequestSettings("u", "m", "chat"), BenchRequest("", 7, conversation))["messages"] == list(
        conversation
    )
    with pytest.raises(ValueError):
        build_payload(settings, BenchRequest("", 7, conversation))
