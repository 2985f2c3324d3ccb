"""The API over the real `AsyncEngine` (engine core, scheduler, KV manager, detokenizer on their
own thread), with the engine tests' fake executor in place of a model: the contract between the
serving layer and the engine client, including an abort that must free every KV block."""

from __future__ import annotations

import time
from collections.abc import Iterator

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
        with serve_in_thread(create_app(registry, callbacks=[live.records.append])) as url:
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
