"""One streamed request against an OpenAI-compatible server, timed chunk by chunk.

Works for `/v1/completions` and `/v1/chat/completions` streams from firebox, llama.cpp's
`llama-server`, vLLM and SGLang. Tokens are counted from the server's `usage` (the last one
seen: firebox puts it on its last content chunk and, with `include_usage`, on a final chunk
with no choices; llama-server only on the final chunk). A stream without usage falls back to
one token per content chunk, and the result says so (`has_usage` False).

Inter-token latency is measured per content chunk, as vLLM's benchmark does: a chunk that
carries several tokens is one gap.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from firebox.bench.workload import BenchRequest

ENDPOINT_PATHS = {"completions": "completions", "chat": "chat/completions"}


@dataclass(frozen=True, slots=True)
class RequestSettings:
    """How every request of a run is sent (the parts that are not per request)."""

    url: str  # full endpoint URL
    model: str
    endpoint: str  # completions | chat
    api_key: str | None = None
    temperature: float = 0.0
    ignore_eos: bool = True
    extra_body: Mapping[str, Any] | None = None  # more request fields, e.g. response_format


@dataclass(slots=True)
class RequestResult:
    """What one request measured; times in seconds (perf_counter)."""

    max_tokens: int
    is_ok: bool = False
    error: str = ""
    prompt_tokens: int = 0
    output_tokens: int = 0
    has_usage: bool = False
    ttft: float = 0.0  # send -> first content chunk
    latency: float = 0.0  # send -> end of stream
    itls: list[float] = field(default_factory=list)  # gaps between successive content chunks


def endpoint_url(base_url: str, endpoint: str) -> str:
    """`http://host:port` (or one ending in `/v1`, like firebox's `/inference/v1`) -> the endpoint URL."""
    if endpoint not in ENDPOINT_PATHS:
        raise ValueError(f"endpoint must be one of {sorted(ENDPOINT_PATHS)}, got {endpoint!r}")
    root = base_url.rstrip("/")
    if not root.endswith("/v1"):
        root += "/v1"
    return f"{root}/{ENDPOINT_PATHS[endpoint]}"


def build_payload(settings: RequestSettings, request: BenchRequest) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "model": settings.model,
        "max_tokens": request.max_tokens,
        "temperature": settings.temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if settings.ignore_eos:
        payload["ignore_eos"] = True
    if settings.extra_body:
        payload.update(settings.extra_body)
    if settings.endpoint == "chat":
        payload["messages"] = list(request.messages or ({"role": "user", "content": request.prompt},))
    elif request.messages is not None:
        raise ValueError("a prompt file with 'messages' needs --endpoint chat")
    else:
        payload["prompt"] = request.prompt
    return payload


def chunk_text(chunk: dict[str, Any]) -> str:
    """The generated text a stream chunk carries (completions `text` or chat `delta.content`)."""
    choices = chunk.get("choices") or []
    if not choices:
        return ""
    choice = choices[0]
    if "text" in choice:
        return choice["text"] or ""
    return (choice.get("delta") or {}).get("content") or ""


class StreamTimer:
    """Folds the events of one stream, each with its arrival time, into a RequestResult."""

    def __init__(self, max_tokens: int, sent_at: float) -> None:
        self.result = RequestResult(max_tokens=max_tokens)
        self.sent_at = sent_at
        self.last_chunk_at: float | None = None
        self.num_content_chunks = 0

    def on_event(self, chunk: dict[str, Any], now: float) -> None:
        if "error" in chunk:
            error = chunk["error"]
            self.result.error = str(error.get("message", error) if isinstance(error, dict) else error)
        usage = chunk.get("usage")
        if usage:
            self.result.has_usage = True
            self.result.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.result.output_tokens = int(usage.get("completion_tokens") or 0)
        if not chunk_text(chunk):
            return
        if self.last_chunk_at is None:
            self.result.ttft = now - self.sent_at
        else:
            self.result.itls.append(now - self.last_chunk_at)
        self.last_chunk_at = now
        self.num_content_chunks += 1

    def finish(self, now: float) -> RequestResult:
        result = self.result
        result.latency = now - self.sent_at
        if not result.has_usage:
            result.output_tokens = self.num_content_chunks
        if not result.error and self.num_content_chunks == 0:
            result.error = "the stream ended without generated text"
        result.is_ok = not result.error
        return result


async def sse_events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """The JSON payloads of an SSE stream's `data:` lines, up to `[DONE]`."""
    async for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        if data:
            yield orjson.loads(data)


async def send_request(
    client: httpx.AsyncClient,
    settings: RequestSettings,
    request: BenchRequest,
    clock: Callable[[], float] = time.perf_counter,
) -> RequestResult:
    """Send one streamed request and time it; a failure is a result with `error` set, never raised."""
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    payload = build_payload(settings, request)
    timer = StreamTimer(request.max_tokens, clock())
    try:
        async with client.stream("POST", settings.url, json=payload, headers=headers) as response:
            if response.status_code != 200:
                body = (await response.aread()).decode("utf-8", "replace")
                timer.result.error = f"HTTP {response.status_code}: {body[:300]}"
            else:
                async for chunk in sse_events(response.aiter_lines()):
                    timer.on_event(chunk, clock())
    except (httpx.HTTPError, orjson.JSONDecodeError) as exc:
        timer.result.error = f"{type(exc).__name__}: {exc}"
    return timer.finish(clock())
