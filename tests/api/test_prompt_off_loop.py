"""A huge truncating chat request is prepared off the event loop: other streams go on meanwhile."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from firebox.engine.types import EngineRequest, RequestOutput
from firebox.loader.tokenizer import Tokenizer
from tests.conftest import serve_in_thread, wait_until
from tests.fakes import CHATML_SPECIAL, CHATML_TEMPLATE, FakeEngine, build_backend

LONG_TEXT = 100_000  # characters: only the huge conversation's render is this long


class _GatedTokenizer(Tokenizer):
    """Encoding a long text first waits (in whatever thread encodes it) until the engine has
    sent five more deltas: on the event loop it never can, and the wait times out."""

    engine: _CountingEngine
    waits: list[bool]

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        if len(text) > LONG_TEXT:
            start = self.engine.num_outputs
            self.waits.append(wait_until(lambda: self.engine.num_outputs >= start + 5, timeout=5.0))
        return super().encode(text, add_special_tokens)


@dataclass
class _CountingEngine(FakeEngine):
    num_outputs: int = 0  # deltas sent, all requests

    async def generate(self, request: EngineRequest) -> AsyncIterator[RequestOutput]:
        async for output in super().generate(request):
            self.num_outputs += 1
            yield output


@pytest.fixture(scope="module")
def gated() -> Iterator[tuple[openai.OpenAI, _CountingEngine, _GatedTokenizer]]:
    from firebox.api.app import create_app
    from firebox.serving.registry import ModelRegistry

    tokenizer = _GatedTokenizer(build_backend(), CHATML_SPECIAL, CHATML_TEMPLATE)
    engine = _CountingEngine(tokenizer=tokenizer, max_model_len=100_000, token_delay=0.005)
    tokenizer.engine, tokenizer.waits = engine, []
    registry = ModelRegistry()
    registry.add(engine.name, engine)
    with serve_in_thread(create_app(registry)) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0), engine, tokenizer


def _huge_conversation() -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "Be brief."}]
    for i in range(2_500):  # some 250 KB of short messages
        messages.append({"role": "user", "content": f"question number {i} about Paris and its people"})
        messages.append({"role": "assistant", "content": f"answer number {i}, briefly"})
    messages.append({"role": "user", "content": "last question"})
    return messages


def test_other_streams_go_on_while_a_huge_truncating_request_is_prepared(gated) -> None:
    client, engine, tokenizer = gated
    chunks_seen, done = [], threading.Event()

    def watched_stream() -> None:
        stream = client.chat.completions.create(
            model=engine.name, messages=[{"role": "user", "content": "hi"}], stream=True, max_tokens=5_000,
            extra_body={"ignore_eos": True},
        )
        for chunk in stream:
            chunks_seen.append(chunk)
            if done.is_set():
                break
        stream.close()

    watcher = threading.Thread(target=watched_stream)
    watcher.start()
    assert wait_until(lambda: len(chunks_seen) >= 3)
    huge = client.chat.completions.create(
        model=engine.name, messages=_huge_conversation(), max_tokens=4, extra_body={"prompt_truncate_len": 200}
    )
    done.set()
    watcher.join(timeout=10)
    assert huge.usage.prompt_tokens <= 200
    assert tokenizer.waits == [True]  # the stream sent five deltas while the huge prompt was tokenized
    assert chunks_seen[-1].choices[0].finish_reason is None  # it was still going when the huge one ended
    assert wait_until(lambda: not engine.running)
