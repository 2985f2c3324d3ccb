"""The API over the real `AsyncEngine` (engine core, scheduler, KV manager, detokenizer on their
own thread), with the engine tests' fake executor in place of a model: the contract between the
serving layer and the engine client, including an abort that must free every KV block."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

from tests.conftest import LiveServer, serve_in_thread, wait_until

MODEL = "accounts/fireworks/models/real-engine"


def _slow_token(sched, context) -> int:
    from tests.engine.engine_fakes import context_hash_token

    time.sleep(0.002)  # so that a client can leave in the middle of a generation
    return 3 + context_hash_token(sched, context) % 200


@pytest.fixture(scope="module")
def real_server() -> Iterator[LiveServer]:
    from firebox.api.app import create_app
    from firebox.engine.launch import run_on_thread
    from firebox.engine.types import ModelInfo
    from firebox.serving.registry import ModelRegistry
    from tests.engine.engine_fakes import make_core
    from tests.fakes import chatml_tokenizer

    tok = chatml_tokenizer()
    core, _ = make_core(
        tok, _slow_token, num_blocks=2048, block_size=4, max_model_len=4096, eos_token_ids=tok.eos_token_ids
    )
    engine = run_on_thread(core, ModelInfo(MODEL, "fake", 4096, tok.vocab_size, tok.eos_token_ids), tok)
    registry = ModelRegistry()
    registry.add(MODEL, engine)
    live = LiveServer(url="", engine=engine, other_engine=None)
    try:
        app = create_app(registry, callbacks=[live.records.append])
        with serve_in_thread(app, send_buffer_bytes=32_768) as url:
            live.url = url
            yield live
    finally:
        engine.shutdown()


def test_chat_and_usage(real_server) -> None:
    response = real_server.openai().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello"}], max_tokens=6, logprobs=True, top_logprobs=2
    )
    assert response.usage.completion_tokens == 6 and response.choices[0].finish_reason == "length"
    assert len(response.choices[0].logprobs.content) == 6


def test_prompt_scoring_with_echo(real_server) -> None:
    response = real_server.openai().completions.create(
        model=MODEL, prompt="Tell me a story", max_tokens=0, echo=True, logprobs=1
    )
    lp = response.choices[0].logprobs
    assert response.choices[0].text == "Tell me a story" and lp.token_logprobs[0] is None
    assert all(v is not None for v in lp.token_logprobs[1:]) and len(lp.tokens) > 1


def test_abort_mid_stream_frees_the_request_and_its_kv_blocks(real_server) -> None:
    engine = real_server.engine
    stream = real_server.openai().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Tell me a story"}], max_tokens=2000, n=2,
        stream=True, extra_body={"ignore_eos": True},
    )  # fmt: skip
    for i, _ in enumerate(stream):
        if i == 5:
            stream.close()
            break
    assert wait_until(lambda: engine.stats.num_running == 0 and engine.stats.num_waiting == 0)
    assert wait_until(lambda: engine.stats.kv_cache_usage == 0.0)
    assert wait_until(lambda: any(r.aborted for r in real_server.records))
    record = next(r for r in real_server.records if r.aborted)
    assert 0 < record.completion_tokens < 4000  # without the abort: 8 s of generation


@pytest.mark.parametrize("n", [1, 2])
def test_a_client_that_stops_reading_has_its_stream_cut_not_buffered(real_server, n: int) -> None:
    """The engine keeps going while the client reads nothing; once its stream holds
    MAX_PENDING_DELTAS unread deltas the request is aborted, and the client that reads again
    finds what was queued, then an error event naming the cause (no [DONE]). With n = 2 the
    merged stream of the choices is bounded too."""
    engine = real_server.engine
    url = urlparse(real_server.url)
    body = json.dumps({
        "model": MODEL, "messages": [{"role": "user", "content": "Tell me a story"}], "max_tokens": 4000,
        "stream": True, "ignore_eos": True, "n": n,
    }).encode()  # fmt: skip
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the server's writes stall
    sock.connect((url.hostname, url.port))
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )
    received = sock.recv(1024)  # the headers (and a first chunk): then the client stops reading
    assert b" 200 " in received.split(b"\r\n", 1)[0]
    assert wait_until(lambda: engine.stats.num_running == 0 and engine.num_outstanding == 0, timeout=60)
    assert wait_until(lambda: engine.stats.kv_cache_usage == 0.0)
    while chunk := sock.recv(65536):  # the client reads again, to the end
        received += chunk
    sock.close()
    events = [line[len(b"data: ") :] for line in _body(received).split(b"\n") if line.startswith(b"data: ")]
    error = json.loads(events[-1])["error"]
    assert error["code"] == "SLOW_READER" and "fell 1024 deltas behind" in error["message"], error
    assert wait_until(lambda: any(r.status_code == 408 for r in real_server.records))
    record = next(r for r in real_server.records if r.status_code == 408)
    assert record.completion_tokens < 4000 * n and len(events) - 1 - n == record.completion_tokens  # all it got
    real_server.records.remove(record)


def _body(response: bytes) -> bytes:
    """The body of a raw HTTP/1.1 response with chunked transfer encoding."""
    rest, body = response.split(b"\r\n\r\n", 1)[1], b""
    while rest:
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line, 16)
        body, rest = body + rest[:size], rest[size + 2 :]
    return body
