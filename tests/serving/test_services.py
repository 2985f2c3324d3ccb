"""The services over a FakeEngine, without HTTP: fan-out, records, aborts, failures."""

from __future__ import annotations

import asyncio
import time

import pytest

from firebox.engine.types import QueueFullError
from firebox.protocol.chat import ChatCompletionChunk, ChatCompletionRequest
from firebox.protocol.common import ErrorResponse
from firebox.protocol.completions import CompletionRequest
from firebox.request_record import RequestRecord
from firebox.serving.auth import Principal
from firebox.serving.chat import ChatService
from firebox.serving.completions import CompletionService
from firebox.serving.errors import InvalidRequestError
from firebox.serving.records import RequestContext, RequestRecorder
from firebox.serving.registry import ModelRegistry
from firebox.serving.generation.service import Completed, Streaming
from tests.fakes import FakeEngine


def _setup(engine: FakeEngine) -> tuple[ModelRegistry, list[RequestRecord], RequestRecorder]:
    registry = ModelRegistry()
    registry.add(engine.name, engine)
    records: list[RequestRecord] = []
    return registry, records, RequestRecorder([records.append])


def _ctx(request_id: str = "r1") -> RequestContext:
    return RequestContext(
        request_id, Principal("acct", "key-1"), "chat.completions", time.monotonic(), int(time.time())
    )


def _chat(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "fake-chatml", "messages": [{"role": "user", "content": "hi"}], **fields}
    )


def test_n_choices_with_seeds_differ_and_repeat() -> None:
    engine = FakeEngine()
    registry, records, recorder = _setup(engine)
    service = ChatService(recorder)

    async def run() -> list[str]:
        result = await service.create(_chat(n=3, seed=7), registry.resolve("fake-chatml"), _ctx())
        assert isinstance(result, Completed)
        return [c.message.content for c in result.body.choices]

    first, second = asyncio.run(run()), asyncio.run(run())
    assert first == second and len(set(first)) == 3
    assert [r.sampling.seed for r in engine.submitted[:3]] == [7, 8, 9]
    assert len(records) == 2 and records[0].completion_tokens == sum(
        len(engine.reply_ids(r)) + 1 for r in engine.submitted[:3]
    )


def test_record_carries_principal_figures_and_request_fields() -> None:
    engine = FakeEngine()
    registry, records, recorder = _setup(engine)
    req = _chat(max_tokens=4, user="end-user-1", metadata={"trace": "abc"})
    result = asyncio.run(ChatService(recorder).create(req, registry.resolve("fake-chatml"), _ctx("rec")))
    assert isinstance(result, Completed)
    (record,) = records
    assert (record.request_id, record.account_id, record.key_id) == ("rec", "acct", "key-1")
    assert record.model == engine.name and record.deployment is None and record.endpoint == "chat.completions"
    assert record.completion_tokens == 4 and record.prompt_tokens == result.body.usage.prompt_tokens
    assert record.status_code == 200 and not record.aborted and record.finish_reason == "length"
    assert record.user == "end-user-1" and record.metadata == {"trace": "abc"}
    assert record.ttft_s is not None and record.latency_s >= record.ttft_s >= 0


def test_closing_a_stream_early_aborts_and_records_only_generated_tokens() -> None:
    engine = FakeEngine(token_delay=0.001)
    registry, records, recorder = _setup(engine)

    async def run() -> int:
        result = await ChatService(recorder).create(
            _chat(stream=True, n=2, max_tokens=50), registry.resolve("fake-chatml"), _ctx()
        )
        assert isinstance(result, Streaming)
        seen = 0
        async for chunk in result.chunks:
            seen += sum(1 for c in chunk.choices if c.delta.content)
            if seen >= 5:
                break
        await result.chunks.aclose()
        return seen

    asyncio.run(run())
    assert not engine.running and sorted(engine.aborted) == ["r1-0", "r1-1"]
    (record,) = records
    assert record.aborted and record.status_code == 200 and 5 <= record.completion_tokens < 100


def test_queue_full_is_raised_before_a_stream_starts_and_recorded() -> None:
    engine = FakeEngine(queue_full=True)
    registry, records, recorder = _setup(engine)
    with pytest.raises(QueueFullError):
        asyncio.run(ChatService(recorder).create(_chat(stream=True), registry.resolve("fake-chatml"), _ctx()))
    assert records[0].status_code == 429 and records[0].completion_tokens == 0


def test_engine_failure_mid_stream_ends_with_an_error_chunk() -> None:
    engine = FakeEngine(fail_after=3)
    registry, records, recorder = _setup(engine)

    async def run() -> list:
        result = await ChatService(recorder).create(_chat(stream=True), registry.resolve("fake-chatml"), _ctx())
        return [chunk async for chunk in result.chunks]

    chunks = asyncio.run(run())
    assert isinstance(chunks[-1], ErrorResponse) and chunks[-1].error.code == "UNAVAILABLE"
    assert all(isinstance(c, ChatCompletionChunk) for c in chunks[:-1])
    assert records[0].status_code == 503 and not engine.running


def test_several_prompts_each_get_n_choices_in_order() -> None:
    engine = FakeEngine(reply=None)  # echo the prompt back
    registry, _, recorder = _setup(engine)
    req = CompletionRequest.model_validate(
        {"model": "fake-chatml", "prompt": ["Paris", "Tell me"], "n": 2, "max_tokens": 2}
    )
    result = asyncio.run(CompletionService(recorder).create(req, registry.resolve("fake-chatml"), _ctx()))
    texts = [(c.index, c.text) for c in result.body.choices]
    tok = engine.tokenizer
    expected = [tok.decode(tok.encode(p)[:2]) for p in ("Paris", "Paris", "Tell me", "Tell me")]
    assert texts == list(enumerate(expected))
    assert result.body.usage.prompt_tokens == len(tok.encode("Paris")) + len(tok.encode("Tell me"))


def test_refused_requests_are_recorded_too() -> None:
    engine = FakeEngine()
    registry, records, recorder = _setup(engine)
    long = _chat(messages=[{"role": "user", "content": "Tell me a story " * 100}], user="u1")
    with pytest.raises(InvalidRequestError):
        asyncio.run(ChatService(recorder).create(long, registry.resolve("fake-chatml"), _ctx("long")))
    (record,) = records
    assert (record.request_id, record.status_code, record.completion_tokens, record.user) == ("long", 400, 0, "u1")
    assert not engine.submitted


def test_an_engine_side_abort_ends_the_stream_with_an_error() -> None:
    engine = FakeEngine(token_delay=0.001)
    registry, records, recorder = _setup(engine)

    async def run() -> list:
        result = await ChatService(recorder).create(_chat(stream=True), registry.resolve("fake-chatml"), _ctx())
        chunks = []
        async for chunk in result.chunks:
            chunks.append(chunk)
            if len(chunks) == 3:
                await engine.abort("r1-0")  # e.g. the engine shutting down
        return chunks

    chunks = asyncio.run(run())
    assert isinstance(chunks[-1], ErrorResponse) and chunks[-1].error.type == "service_unavailable"
    assert records[0].status_code == 503 and not records[0].aborted
