"""The real server beyond the guide: prompt scoring, stop strings, a burst of aborted streams,
the context limit and the `fireworks-ai` SDK."""

from __future__ import annotations

import asyncio

import openai
import pytest

from tests.e2e.helpers import HELLO, MODEL, PROMPTS, long_stream_body, wait_until_idle

pytestmark = pytest.mark.slow

NUM_BURST_STREAMS = 16


def test_echo_scoring_of_several_prompts(server, client) -> None:
    prompts = list(PROMPTS[:3])
    batch = client.completions.create(model=MODEL, prompt=prompts, max_tokens=0, echo=True, logprobs=0)
    assert [c.index for c in batch.choices] == [0, 1, 2]
    total = 0
    for prompt, choice in zip(prompts, batch.choices):
        num_tokens = len(server.tokenize(prompt=prompt))
        total += num_tokens
        logprobs = choice.logprobs
        assert choice.text == prompt and "".join(logprobs.tokens) == prompt
        assert logprobs.token_logprobs[0] is None and len(logprobs.token_logprobs) == num_tokens
        assert all(lp < 0 for lp in logprobs.token_logprobs[1:])  # P - 1 real scores
        alone = client.completions.create(model=MODEL, prompt=prompt, max_tokens=0, echo=True, logprobs=0)
        assert alone.choices[0].logprobs.token_logprobs[1:] == pytest.approx(logprobs.token_logprobs[1:], abs=1e-4)
    assert (batch.usage.prompt_tokens, batch.usage.completion_tokens) == (total, 0)


def test_stop_strings_cut_the_reply(client) -> None:
    request = {"model": MODEL, "messages": HELLO, "max_tokens": 24, "temperature": 0}
    full = client.chat.completions.create(**request).choices[0].message.content
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    stopped = client.chat.completions.create(**request, stop=[stop, "no such text"])
    assert stopped.choices[0].message.content == full[: full.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"
    completion = client.completions.create(model=MODEL, prompt=PROMPTS[1], max_tokens=16, temperature=0)
    text = completion.choices[0].text
    cut = client.completions.create(model=MODEL, prompt=PROMPTS[1], max_tokens=16, temperature=0, stop=text[5:9])
    assert cut.choices[0].text == text[: text.index(text[5:9])] and cut.choices[0].finish_reason == "stop"


def test_streamed_text_never_splits_a_character(client) -> None:
    request = {"model": MODEL, "messages": [{"role": "user", "content": "Reply with three emojis only."}]}
    request |= {"max_tokens": 24, "temperature": 0}
    chunks = list(client.chat.completions.create(**request, stream=True))
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    whole = client.chat.completions.create(**request)
    assert "".join(deltas) == whole.choices[0].message.content
    assert not any("\ufffd" in delta for delta in deltas)
    # The model answers in 4-byte characters of several tokens each: half characters were held back.
    assert any(ord(char) > 0xFFFF for char in "".join(deltas)) and len(deltas) < whole.usage.completion_tokens


async def _open_and_abandon(async_client: openai.AsyncOpenAI, index: int) -> int:
    """Start a long stream, read until its first text, then close it; returns the chunks read."""
    body = long_stream_body(f"Tell me story number {index} about a dragon.")
    stream = await async_client.chat.completions.create(
        model=MODEL, messages=body["messages"], stream=True, max_tokens=body["max_tokens"],
        extra_body={"ignore_eos": True},
    )  # fmt: skip
    num_chunks = 0
    async for chunk in stream:
        num_chunks += 1
        if chunk.choices and chunk.choices[0].delta.content:
            break
    await stream.close()
    return num_chunks


def test_a_burst_of_aborted_streams_frees_everything(server) -> None:
    aborted_before = server.metric("firebox:request_success_total", finished_reason="abort")

    async def burst() -> list[int]:
        async with openai.AsyncOpenAI(base_url=f"{server.url}/inference/v1", api_key="e2e", max_retries=0) as client:
            return await asyncio.gather(*(_open_and_abandon(client, i) for i in range(NUM_BURST_STREAMS)))

    assert all(n >= 1 for n in asyncio.run(burst()))  # each one was generating when it was closed
    assert wait_until_idle(server), "aborted streams still run in the engine or hold KV blocks"
    assert server.metric("firebox:request_success_total", finished_reason="abort") == aborted_before + NUM_BURST_STREAMS


def test_a_prompt_over_the_context_length_is_a_400_with_the_numbers(server, client) -> None:
    prompt = "hello " * 600
    num_tokens = len(server.tokenize(prompt=prompt))
    assert num_tokens > 512
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=MODEL, prompt=prompt, max_tokens=4)
    assert caught.value.status_code == 400
    error = caught.value.body
    assert str(num_tokens) in error["message"] and "512" in error["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=4)
    assert caught.value.status_code == 400 and "512" in caught.value.body["message"]
    still = client.completions.create(model=MODEL, prompt="Still serving?", max_tokens=2, extra_body={"ignore_eos": True})
    assert still.usage.completion_tokens == 2


def test_fireworks_sdk_chat(server, client) -> None:
    request = {"model": MODEL, "messages": HELLO, "max_tokens": 16, "temperature": 0}
    response = server.fireworks().chat.completions.create(**request, top_k=1, return_token_ids=True)
    reference = client.chat.completions.create(**request)
    assert response.choices[0].message.content == reference.choices[0].message.content  # top_k=1 is greedy
    assert response.usage.prompt_tokens == reference.usage.prompt_tokens
    assert response.prompt_token_ids == server.tokenize(messages=HELLO)
